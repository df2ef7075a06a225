"""Build and load the serving engine's CPU kernels: C++ compiled and cached by `ragsvc.native`, called
through ctypes. When it cannot be built (no compiler, RAGSVC_NO_NATIVE=1) `load_library` returns None and
callers keep their plain-torch path, which is also the reference the kernels are tested against.

Each kernel is a `.cpp` file beside the module that loads it (`cpu_fused.py` -> `cpu_fused.cpp`), shipped as
package data. Every one includes `cpu_prelude.h`, what they all share: float32 / bfloat16 loads and
round-to-nearest-even stores, a vectorisable exp, and their AVX-512 forms.
"""

from __future__ import annotations

import ctypes
from typing import Any

from ragsvc import native
from ragsvc.native import FLAGS

_FLAGS = (*FLAGS, "-fopenmp")
"""The shared flags plus OpenMP: a library links the process's libgomp (torch's own, by soname), so its
parallel loops share torch's threads."""


def load_library(name: str, filename: str, signatures: dict[str, list[Any]]) -> ctypes.CDLL | None:
    """Compile `filename` (a .cpp beside this module, with the headers it includes) with ragsvc.native, once
    per source text, compiler and CPU, and declare `signatures` (symbol -> ctypes argument types, all
    returning void); None when it cannot be built, and the caller keeps the torch path."""
    source, headers = native.read_source(__package__, filename)
    signed = {sym: (args, None) for sym, args in signatures.items()}
    return native.load_library(name, source, signed, flags=_FLAGS, headers=headers)
