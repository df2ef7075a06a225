"""Crash-safe file writes: write to a temp name in the same folder, fsync, rename, fsync the folder.

A reader therefore sees either the old file or the new one, never half of one. Checksums let the loader
refuse a file that was damaged after it was written (truncated, garbage) before a native library parses it:
hnswlib and faiss trust their input and may crash on garbage.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from pathlib import Path

_CHUNK_BYTES = 1 << 22


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp_path)` to produce the file (its return value is ignored), then make it durable and move it
    to `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX needs the folder itself fsynced)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            crc = zlib.crc32(chunk, crc)
    return crc
