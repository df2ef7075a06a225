"""Running the Triton kernels' tests on a CPU, in Triton's interpreter (TRITON_INTERPRET=1).

Triton reads the variable when triton.language is first imported: its own helpers (tl.zeros, tl.cdiv...)
are @triton.jit functions decorated then. A triton.language imported earlier without it (another test
file's transformers import, say) holds compiled-only functions, whatever the variable says afterwards, so
the tests tell a late import by what was loaded, not by the variable.
"""

from __future__ import annotations

import os
import sys

import torch


def use_interpreter() -> bool:
    """Without a GPU, ask for the interpreter; True when triton.language was already imported without it
    (the kernels then cannot run here: the caller skips)."""
    language = sys.modules.get("triton.language")
    late = language is not None and type(language.zeros).__name__ != "InterpretedFunction"
    if torch.cuda.is_available():
        return False
    os.environ.setdefault("TRITON_INTERPRET", "1")
    return late
