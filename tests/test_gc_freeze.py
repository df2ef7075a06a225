"""Load-time objects kept out of the garbage collector's full passes, in server processes only.

The collector is process-wide, so the module is checked in a child interpreter (this test process keeps its
own collector as it is), and the wiring through a real `ragsvc serve`, whose log says what it froze."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ragsvc.bench.process import stop_process
from ragsvc.bench.server_process import free_port

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
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", "from ragsvc.cli import main; main()", "serve",
                                 "--data-dir", str(tmp_path / "data"), "--port", str(port)],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
                while time.monotonic() < deadline:  # waits for readiness (the model's load), polled
                    assert proc.poll() is None, log.read_text()[-3000:]
                    try:
                        if client.get("/health").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.1)
                else:
                    pytest.fail("the server never became ready:\n" + log.read_text()[-3000:])
        finally:
            stop_process(proc)
    lines = [line for line in log.read_text().splitlines() if "kept out of garbage collection" in line]
    assert len(lines) == 1 and "the store loaded:" in lines[0], log.read_text()[-3000:]
