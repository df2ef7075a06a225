"""A server's load-time objects kept out of the cyclic garbage collector's full passes.

A loaded server holds about half a million objects that live as long as the process: the modules, classes and
functions of torch, transformers, OpenVINO, FastAPI and pydantic, and the models' own modules. CPython's full
(generation 2) collection walks every one of them whenever enough newer objects have survived, holding the
GIL throughout, so every request thread and the engine's step thread stop for its length. On a 2-core AMD
EPYC (Zen 3) one such pass took 0.4 s; under `ragsvc bench load` one came every ~20 s, took 370-530 ms, and
was the search p99 (600 ms against a p50 of 270).

`gc.freeze()` moves every object tracked at that moment into the permanent generation, which collections
skip; objects created afterwards are collected as before (a cycle among them is still found). Frozen objects
are still freed by reference counting, but a cycle among them never is, so freezing is for a process that
owns its heap and keeps what it loaded: the `serve` and `serve-model` commands turn it on
(`freeze_after_loads`), and the app then freezes once the store has loaded and once the model has, each time
after one full collection so that loading's own garbage is freed rather than frozen. An app embedded in
another program (a test's in-process server) leaves that program's collector as it is.
"""

from __future__ import annotations

import gc
import logging
import time

logger = logging.getLogger(__name__)

_enabled = False


def freeze_after_loads() -> None:
    """Let `loaded` freeze this process's heap (the server commands call it before the app starts)."""
    global _enabled
    _enabled = True


def loaded(what: str) -> int | None:
    """After a load (`what` names it, for the log line): where `freeze_after_loads` turned it on, collect
    once and freeze every object alive now, and return how many are frozen; else None, and nothing changes."""
    if not _enabled:
        return None
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info("%s loaded: %d objects kept out of garbage collection (%.0f ms)", what, frozen,
                (time.perf_counter() - started) * 1000)
    return frozen
