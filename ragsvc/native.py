"""Compile a small C++ source with the system compiler (once per source and CPU) and load it with ctypes.

Shared by the index (the 8-bit HNSW walk) and the serving engine (CPU attention and fused kernels).
Why not a compiled extension in the wheel: the package stays pure Python and installs anywhere, and a kernel
built with -march=native uses the vector units of the CPU it runs on; these sources need no torch headers, so
g++ builds one in seconds, where a torch extension spends minutes compiling torch's headers. Libraries are
cached under ~/.cache/ragsvc/kernels (written to a temp name, then renamed, so concurrent processes never load
half a file). With no compiler, a failed build, or RAGSVC_NO_NATIVE=1, `load_library` returns None and the caller
keeps its plain path (torch or faiss), which is also the reference each kernel is tested against.

Sources ship as package data: a kernel's C++ sits beside the module that loads it, with that module's name
(`cpu_fused.py` loads `cpu_fused.cpp`), and headers its kernels share sit beside them (`cpu_prelude.h`), so
C++ tooling sees real files. `read_source` returns a source and the headers it includes with quotes; the
build copies those headers next to the source and the cache key covers their text as well as the source's.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

from ragsvc.config import NativeSettings

logger = logging.getLogger(__name__)

FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=c++17")

_LOCAL_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"', re.MULTILINE)


def cache_dir() -> Path:
    base = NativeSettings().cache_home or Path.home() / ".cache"
    return Path(base) / "ragsvc" / "kernels"


def _cpu_key() -> str:
    # -march=native bakes the CPU's instruction set in: a library built on another CPU must not be reused.
    try:
        return next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        return ""


def read_source(package: str, filename: str) -> tuple[str, dict[str, str]]:
    """`filename` from `package`'s files -> (its text, {header name: text}) for every header it includes with
    quotes, directly or through another header; those headers must sit beside it (flat names)."""
    root = files(package)
    source = root.joinpath(filename).read_text(encoding="utf-8")
    headers: dict[str, str] = {}
    pending = _LOCAL_INCLUDE.findall(source)
    while pending:
        name = pending.pop()
        if name in headers:
            continue
        if "/" in name or "\\" in name:
            raise ValueError(f"{filename} includes {name!r}: a kernel's headers must sit beside it (plain names)")
        headers[name] = root.joinpath(name).read_text(encoding="utf-8")
        pending += _LOCAL_INCLUDE.findall(headers[name])
    return source, headers


def _build(compiler: str, source: str, headers: Mapping[str, str], target: Path, flags: tuple[str, ...]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src, lib = Path(tmp) / "kernel.cpp", Path(tmp) / "kernel.so"
        src.write_text(source)
        for name, text in headers.items():  # beside kernel.cpp, where `#include "name"` looks first
            (Path(tmp) / name).write_text(text)
        subprocess.run([compiler, *flags, str(src), "-o", str(lib)], check=True, capture_output=True, timeout=300)
        os.replace(lib, target)  # atomic: a concurrent process sees no file or the whole new one


def load_library(name: str, source: str, signatures: dict[str, tuple[list[Any], Any]], *,
                 flags: tuple[str, ...] = FLAGS, headers: Mapping[str, str] | None = None) -> ctypes.CDLL | None:
    """Compile `source` with the `headers` it includes (name -> text, from `read_source`) once per source,
    headers, flags, compiler and CPU, and declare `signatures` (symbol -> (argtypes, restype)); None, with a
    warning logged, when there is no compiler or the build fails."""
    settings = NativeSettings()
    if settings.no_native:
        return None
    compiler = shutil.which(settings.compiler)
    if compiler is None:
        logger.warning("no C++ compiler found: %s falls back to its plain path", name)
        return None
    headers = dict(headers or {})
    included = [part for item in sorted(headers.items()) for part in item]  # a header's edit is a new library
    digest = hashlib.sha256("\0".join([source, *included, compiler, *flags, _cpu_key()]).encode()).hexdigest()[:16]
    target = cache_dir() / f"{name}_{digest}.so"
    try:
        if not target.exists():
            _build(compiler, source, headers, target, flags)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", b"") or b""
        logger.warning("native %s unavailable (%s %s): using the plain path", name, err, detail[-500:])
        return None
    for symbol, (argtypes, restype) in signatures.items():
        fn = getattr(lib, symbol)
        fn.argtypes, fn.restype = argtypes, restype
    return lib
