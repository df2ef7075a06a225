"""What every benchmark JSON records about where it ran: the code's git sha and the CPU (its model name with
family, model and stepping, `ragsvc.cpu_identity`; and, where a benchmark asks, its matrix and vector
extensions: two Xeons of one model name may differ in AMX).

The sha is read from the checkout the `ragsvc` package was imported from (not the working directory), through
`ragsvc.evals.results.git_sha`, the one implementation eval results use too; "unknown" outside a checkout.
"""

from __future__ import annotations

from pathlib import Path

from ragsvc.cpu_identity import cpu_name
from ragsvc.evals.results import git_sha

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def package_git_sha() -> str:
    """HEAD of the checkout holding this package, or "unknown" (an installed wheel, git missing)."""
    return git_sha(PACKAGE_DIR) or "unknown"


def cpu_model() -> str:
    """The CPU as "NAME (family F model M stepping S)"; see `ragsvc.cpu_identity`."""
    return cpu_name()


ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile")
"""The /proc/cpuinfo flags `cpu_isa` reports: those that choose the embedder's and the engine's kernels."""


def cpu_isa() -> list[str]:
    """Which of ISA_FLAGS this CPU reports (empty where /proc/cpuinfo cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in ISA_FLAGS if flag in present]
    except OSError:
        pass
    return []
