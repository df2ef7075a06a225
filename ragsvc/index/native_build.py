"""Compile a small C++ source with the system compiler (once per source and CPU) and load it with ctypes.

Why not a compiled extension in the wheel: the package stays pure Python and installs anywhere; a kernel built
with -march=native uses this CPU's vector units. The library is cached under ~/.cache/ragsvc/kernels (written
to a temp name, then renamed, so concurrent processes never load half a file). With no compiler, or a failed
build, `load_library` returns None and the caller keeps its library-backed path, which is also the reference
the kernel is tested against.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_FLAGS = ["-O3", "-march=native", "-shared", "-fPIC", "-std=c++17"]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ragsvc" / "kernels"


def _cpu_key() -> str:
    # -march=native bakes the CPU's instruction set in: a library built on another CPU must not be reused.
    try:
        return next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        return ""


def _build(compiler: str, source: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src, lib = Path(tmp) / "kernel.cpp", Path(tmp) / "kernel.so"
        src.write_text(source)
        subprocess.run([compiler, *_FLAGS, str(src), "-o", str(lib)], check=True, capture_output=True, timeout=300)
        os.replace(lib, target)


def load_library(name: str, source: str, signatures: dict[str, tuple[list[Any], Any]]) -> ctypes.CDLL | None:
    """Compile `source` (once per source, compiler and CPU) and declare `signatures` (symbol -> (argtypes,
    restype)); None, with a warning logged, when there is no compiler or the build fails."""
    if os.environ.get("RAGSVC_NO_NATIVE"):
        return None
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        logger.warning("no C++ compiler found: %s falls back to its library path", name)
        return None
    digest = hashlib.sha256("\0".join([source, compiler, *_FLAGS, _cpu_key()]).encode()).hexdigest()[:16]
    target = cache_dir() / f"{name}_{digest}.so"
    try:
        if not target.exists():
            _build(compiler, source, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", b"") or b""
        logger.warning("native %s unavailable (%s %s): using the library path", name, err, detail[-500:])
        return None
    for symbol, (argtypes, restype) in signatures.items():
        fn = getattr(lib, symbol)
        fn.argtypes, fn.restype = argtypes, restype
    return lib
