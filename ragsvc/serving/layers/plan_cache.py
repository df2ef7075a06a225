"""Choices measured on the CPU at hand, cached on disk: each plan (the quantised kernels' blocking, the small
and the wide GEMM's thresholds, the prefill kernel's arithmetic) is timed once and read back on later starts.

The cache key is whatever changes the measurement: the CPU (cpu_tuning.cpu_info), the kernel source, torch's
version, the thread count, the shapes. A plan is a dataclass stored as JSON beside the compiled kernels
(ragsvc.native.cache_dir); it is written to a temporary name and renamed, so two processes measuring at once
both end with a whole file, and a damaged or outdated file is measured again, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from ragsvc import native

logger = logging.getLogger(__name__)

P = TypeVar("P")


def plan_path(kind: str, key: object) -> Path:
    """Where the plan of this kind and key lives: `kind`-<16 hex digits of the key's hash>.json."""
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    return native.cache_dir() / f"{kind}-{digest}.json"


def cached_plan(kind: str, key: object, cls: type[P], measure: Callable[[], P],
                summary: Callable[[P], Any] | None = None) -> P:
    """The plan cached under (`kind`, `key`), or `measure()`'s result, cached first; `summary` picks what the
    log line shows of a new plan (the whole plan by default)."""
    path = plan_path(kind, key)
    try:
        return cls(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        pass
    started = time.perf_counter()
    plan = measure()
    assert is_dataclass(plan) and not isinstance(plan, type)
    logger.info("measured the %s plan in %.1f s: %s", kind, time.perf_counter() - started,
                summary(plan) if summary else plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(plan)), encoding="utf-8")
    os.replace(tmp, path)
    return plan
