"""Reading files found in folders that someone else filled (a repository to index, a folder to ingest).

Such a folder can hold a named pipe, a socket or a symlink to a device under an ordinary file name. Opening a
pipe for reading blocks until some process writes to it, so a single `x.py` that is a FIFO would stall a
repository job (and every job queued behind it) for ever, and a `.gitignore` linked to `/dev/zero` would be read
until memory ran out. So the file is opened without blocking, checked to be a regular file on the open
descriptor (no race with a rename between a check and the open), and read up to a bound.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # POSIX; Windows has no named pipes in the file system to block on
_OPEN_FLAGS = os.O_RDONLY | _NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


class NotRegularFile(OSError):
    """A pipe, socket or device where a file was expected."""


class FileTooLarge(OSError):
    """More bytes than the caller's bound (the file may have grown since it was listed)."""


def open_regular(path: str | Path) -> BinaryIO:
    """`path` open for binary reading, if it is a regular file (after symlinks); NotRegularFile otherwise.
    Never blocks on a pipe."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(errno.EINVAL, f"not a regular file ({_kind(mode)}); only files are read",
                                 str(path))
        if _NONBLOCK:  # only there to open a pipe without waiting; reads of a regular file do not care
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path, *, max_bytes: int) -> bytes:
    """The whole of a regular file of at most `max_bytes` bytes; NotRegularFile or FileTooLarge otherwise. Reads
    at most `max_bytes + 1` bytes, whatever the file claims its size to be."""
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be at least 0, got {max_bytes}")
    with open_regular(path) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLarge(errno.EFBIG, f"larger than {max_bytes} bytes", str(path))
    return data


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a plain file"
