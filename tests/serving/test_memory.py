"""malloc keeps freed memory: a large tensor allocated again after it was freed costs no page faults."""

from __future__ import annotations

import platform
import resource

import pytest
import torch

from ragsvc.serving.memory import keep_freed_memory


def test_freed_activations_are_reused_without_faults() -> None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert keep_freed_memory()
    nbytes = 80 << 20  # above glibc's largest mmap threshold (32 MB): without the setting, a fresh mapping
    torch.empty(nbytes, dtype=torch.uint8).fill_(1)  # freed at once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(nbytes, dtype=torch.uint8).fill_(2)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < (nbytes >> 12) // 10, f"{faults} page faults re-allocating {nbytes >> 20} MB"
