"""The CPU's name as benchmarks record it and as per-CPU plan caches key on: the model name and the chip's
family, model and stepping numbers.

A hypervisor often reports a generic model name: the 2-vCPU AMD EPYC VMs here say "AMD EPYC" whether they run
on a Zen 4 (family 25 model 17) or a Zen 5 (family 26 model 2), and SmolLM2's 32-concurrent serving benchmark
gave 133-151 tok/s on the first and 204-264 on the second. The numbers come from the CPUID leaf the
hypervisor passes through, so with them records from two different chips do not read alike.
"""

from __future__ import annotations

import platform
from pathlib import Path

_NUMBERS = (("cpu family", "family"), ("model", "model"), ("stepping", "stepping"))


def describe_cpu(cpuinfo: str) -> str:
    """The first processor of a /proc/cpuinfo text -> "NAME (family F model M stepping S)", naming only the
    numbers present; "unknown" for NAME when the text has none."""
    name, numbers = "unknown", dict[str, str]()
    for line in cpuinfo.splitlines():
        if not line.strip():
            if name != "unknown" or numbers:
                break  # the end of the first processor's block
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name":
            name = value or name
        for field, label in _NUMBERS:
            if key == field and value:
                numbers.setdefault(label, value)
    shown = " ".join(f"{label} {numbers[label]}" for _, label in _NUMBERS if label in numbers)
    return f"{name} ({shown})" if shown else name


def cpu_name() -> str:
    """This machine's CPU by `describe_cpu`, else what `platform` knows, else "unknown"."""
    try:
        return describe_cpu(Path("/proc/cpuinfo").read_text())
    except OSError:
        return platform.processor() or "unknown"
