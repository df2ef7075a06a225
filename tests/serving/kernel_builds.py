"""A kernel library compiled for another CPU (`-march`), to check its scalar paths where -march=native lands
on a machine without the vector extensions."""

from __future__ import annotations

import ctypes
import platform
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

MARCH_NEEDS = {
    "x86-64-v2": ("sse4_2", "popcnt"),
    "x86-64-v3": ("avx2", "fma", "f16c", "bmi2"),
    "skylake-avx512": ("avx512f", "avx512bw", "avx512vl", "avx512dq"),
    "cooperlake": ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16"),
}
"""The /proc/cpuinfo flags a build for each -march may use: a library built for more than this CPU has would
die of an illegal instruction, so such a build is skipped rather than loaded."""


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def build_for_march(tmp_path: Path, source: str, march: str, signatures: dict[str, list[Any]]) -> ctypes.CDLL:
    """`source` (in ragsvc.serving.layers, with cpu_prelude.h) built with g++ -march=`march`, its symbols typed
    by `signatures`; skips the test without g++ on x86-64, or on a CPU that cannot run that build."""
    compiler = shutil.which("g++")
    if compiler is None or platform.machine() != "x86_64":
        pytest.skip("needs g++ on x86-64")
    missing = [f for f in MARCH_NEEDS[march] if f not in _cpu_flags()]
    if missing:
        pytest.skip(f"this CPU cannot run a -march={march} build (no {', '.join(missing)})")
    src = files("ragsvc.serving.layers")
    for name in (source, "cpu_prelude.h"):
        (tmp_path / name).write_text(src.joinpath(name).read_text())
    lib_path = tmp_path / f"{Path(source).stem}.so"
    subprocess.run([compiler, "-O2", f"-march={march}", "-shared", "-fPIC", "-std=c++17", "-fopenmp",
                    str(tmp_path / source), "-o", str(lib_path)], check=True)
    lib = ctypes.CDLL(str(lib_path))
    for symbol, args in signatures.items():
        fn = getattr(lib, symbol)
        fn.argtypes, fn.restype = args, None
    return lib
