"""Lint and type checks as tests, so the suite CI runs (the README's quick-start command) fails on them too.

Both tools read their settings from pyproject.toml ([tool.ruff], [tool.mypy]), so they run from the repository
root. A cold mypy run over the package takes one to two minutes, hence `slow` (still part of the CI run).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def test_ruff_is_clean() -> None:
    result = _run("ruff", "check", "--no-cache", "ragsvc", "tests", timeout_s=120)
    if result.returncode != 0:
        pytest.fail(f"ruff check ragsvc tests:\n{result.stdout}{result.stderr}", pytrace=False)


MYPY_CACHE = Path(tempfile.gettempdir()) / "ragsvc-test-mypy-cache"
"""Outside the checkout, so a fresh clone on the same machine (CI's) checks incrementally: mypy re-reads a module
whose content changed, and what depends on it, and takes the rest from the cache (94 s cold, 4 s warm on the
Zen 3). A new mypy version or configuration starts the cache again."""


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    result = _run("mypy", "--cache-dir", str(MYPY_CACHE), "ragsvc", timeout_s=540)
    if result.returncode != 0:
        pytest.fail(f"mypy ragsvc:\n{result.stdout}{result.stderr}", pytrace=False)
