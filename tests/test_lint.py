"""Lint and type checks as tests, so the suite CI runs (the README's quick-start command) fails on them too.

Both tools read their settings from pyproject.toml ([tool.ruff], [tool.mypy]), so they run from the repository
root. A cold mypy run over the package takes about a minute, hence `slow` (still part of the CI run).
"""

from __future__ import annotations

import subprocess
import sys
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


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    result = _run("mypy", "ragsvc", timeout_s=540)
    if result.returncode != 0:
        pytest.fail(f"mypy ragsvc:\n{result.stdout}{result.stderr}", pytrace=False)
