"""Compile a small C++ source with the system compiler (once per source and CPU) and load it with ctypes.

Shared by the index (the 8-bit HNSW walk) and the serving engine (CPU attention and fused kernels).
Why not a compiled extension in the wheel: the package stays pure Python and installs anywhere, and a kernel
built with -march=native uses this CPU's vector units; these sources need no torch headers, so g++ builds one
in about a second (a torch extension takes a minute or more on two cores). Libraries are cached under
~/.cache/ragsvc/kernels (written to a temp name, then renamed, so concurrent processes never load half a
file). With no compiler, a failed build, or RAGSVC_NO_NATIVE=1, `load_library` returns None and the caller
keeps its plain path (torch or faiss), which is also the reference each kernel is tested against.
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

FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=c++17")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ragsvc" / "kernels"


def _cpu_key() -> str:
    # -march=native bakes the CPU's instruction set in: a library built on another CPU must not be reused.
    try:
        return next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        return ""


def _build(compiler: str, source: str, target: Path, flags: tuple[str, ...]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src, lib = Path(tmp) / "kernel.cpp", Path(tmp) / "kernel.so"
        src.write_text(source)
        subprocess.run([compiler, *flags, str(src), "-o", str(lib)], check=True, capture_output=True, timeout=300)
        os.replace(lib, target)  # atomic: a concurrent process sees no file or the whole new one


def load_library(name: str, source: str, signatures: dict[str, tuple[list[Any], Any]], *,
                 flags: tuple[str, ...] = FLAGS) -> ctypes.CDLL | None:
    """Compile `source` (once per source, flags, compiler and CPU) and declare `signatures` (symbol ->
    (argtypes, restype)); None, with a warning logged, when there is no compiler or the build fails."""
    if os.environ.get("RAGSVC_NO_NATIVE"):
        return None
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        logger.warning("no C++ compiler found: %s falls back to its plain path", name)
        return None
    digest = hashlib.sha256("\0".join([source, compiler, *flags, _cpu_key()]).encode()).hexdigest()[:16]
    target = cache_dir() / f"{name}_{digest}.so"
    try:
        if not target.exists():
            _build(compiler, source, target, flags)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", b"") or b""
        logger.warning("native %s unavailable (%s %s): using the plain path", name, err, detail[-500:])
        return None
    for symbol, (argtypes, restype) in signatures.items():
        fn = getattr(lib, symbol)
        fn.argtypes, fn.restype = argtypes, restype
    return lib
