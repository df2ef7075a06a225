"""Results files: atomic writes, per-config checkpoints, and reading a results JSON back with clear errors.

The shape of a results file (one per suite run) is `ragsvc.evals.records.RunResult.to_json`. `per_query` is
what makes paired significance tests possible (`ragsvc eval compare`). `index_bytes` is what the collection's
index holds in memory to answer a query (ANN structure + rescoring vectors + rotation), from
`VectorStore.index_bytes`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ragsvc.errors import InvalidInput
from ragsvc.evals.records import ConfigResult, RunResult


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; results are meant to be shared and committed
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def git_sha(cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def load_results(path: Path) -> RunResult:
    """Read a results JSON written by `ragsvc eval run`, checking the keys compare and reports rely on."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: results file not found; `ragsvc eval run SUITE` writes one")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 text (at byte offset {exc.start}); is it a results JSON?") from exc
    return RunResult.from_json(data, source=str(path))


class Checkpoints:
    """Finished configs of an interrupted run, one JSON file each, keyed by the settings that produced them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, name: str, key: str) -> Path:
        return self.folder / f"{name}-{key}.json"

    def load(self, name: str, key: str) -> ConfigResult | None:
        path = self._path(name, key)
        if not path.is_file():
            return None
        try:
            return ConfigResult.from_json(json.loads(path.read_text(encoding="utf-8")), where=str(path))
        except (ValueError, InvalidInput):  # cannot happen with atomic writes; never trust a cache
            return None

    def save(self, name: str, key: str, result: ConfigResult) -> None:
        write_json_atomic(self._path(name, key), result.to_json())

    def clear(self) -> None:
        if self.folder.is_dir():
            for path in self.folder.glob("*.json"):
                path.unlink(missing_ok=True)


def check_out_path(out: Path) -> Path:
    """`out` when it can be a results file: a path ending in .json, not a folder (the report goes beside it)."""
    if out.suffix != ".json" or out.is_dir():
        raise InvalidInput(f"--out {out} must be a file path ending in .json (the report is written beside it)")
    return out
