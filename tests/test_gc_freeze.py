"""Load-time objects kept out of the garbage collector's full passes, in server processes only.

The collector is process-wide, so the module is checked in a child interpreter (this test process keeps its
own collector as it is), and the wiring through a real `ragsvc serve`, whose log says what it froze."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ragsvc.bench.server_process import serve_process

REPO = Path(__file__).resolve().parents[1]

CHECK = """
import gc, weakref
from ragsvc import gc_freeze

class Node:
    pass

def cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a

gc.disable()  # only `loaded` may collect: an automatic pass would free the garbage below whatever it does
assert gc_freeze.loaded("nothing") is None and gc.get_freeze_count() == 0, "off unless a server turned it on"
kept = cycle()
garbage = weakref.ref(cycle())  # unreachable already: a cycle only the collector frees
gc_freeze.freeze_after_loads()
frozen = gc_freeze.loaded("the test's objects")
assert garbage() is None, "loading's garbage is collected, not frozen"
assert frozen == gc.get_freeze_count() > 1000, frozen
later = weakref.ref(cycle())
gc.collect()
assert later() is None, "a cycle made after the freeze is still collected"
assert kept.other.other is kept
print("ok", frozen)
"""


def test_a_server_process_freezes_what_it_loaded_and_still_collects_what_comes_after() -> None:
    done = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok ")


@pytest.mark.slow
def test_ragsvc_serve_freezes_once_the_store_has_loaded(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with log.open("wb") as out, serve_process(tmp_path / "data", env={"RAGSVC_LOG_LEVEL": "INFO"}, output=out):
        pass  # ready: the store has loaded
    lines = [line for line in log.read_text().splitlines() if "kept out of garbage collection" in line]
    assert len(lines) == 1 and "the store loaded:" in lines[0], log.read_text()[-3000:]
