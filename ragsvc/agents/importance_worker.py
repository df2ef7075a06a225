"""Asynchronous importance scoring: memories are stored and searchable at once with importance pending, and
a worker thread rates them in batches (one generate_many per batch, so a batching engine serves them in one
pass). An observation never waits for the model; retrieval treats a pending rating as neutral meanwhile.

`score_pending` is the one step, usable without a thread (a simulation loop can call it between ticks).
"""

from __future__ import annotations

import logging
import threading
import time

from ragsvc.agents.importance import ImportanceScorer
from ragsvc.agents.memory import MemoryStream
from ragsvc.errors import NotReady

logger = logging.getLogger(__name__)


def score_pending(stream: MemoryStream, scorer: ImportanceScorer, *, max_memories: int = 16) -> int:
    """Rate up to `max_memories` of the stream's pending memories, oldest first; return how many were rated."""
    pending = stream.tables.pending(agent=stream.agent, limit=max_memories)
    if not pending:
        return 0
    scores = scorer.score_many([m.text for m in pending], agent=stream.agent)
    stream.set_importance([m.id for m in pending], [min(10.0, max(1.0, s.expected)) for s in scores])
    return len(pending)


class ImportanceWorker:
    """A daemon thread that rates a stream's pending memories whenever `notify()` says there are new ones.

    A failed batch (the model server down, say) is logged and kept in `last_error`; the memories stay pending
    and are retried on the next notify, so nothing is lost and nothing loops hot against a dead server.
    """

    def __init__(self, stream: MemoryStream, scorer: ImportanceScorer, *, batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._stream, self._scorer, self._batch_size = stream, scorer, batch_size
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._stop = False
        self.last_error: BaseException | None = None
        self.num_scored = 0
        self._thread = threading.Thread(target=self._run, name=f"importance-{stream.agent}", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """Say that memories were added (cheap; call after every add)."""
        self._idle.clear()
        self._wake.set()

    def drain(self, *, timeout_s: float = 60.0) -> None:
        """Block until no memory is pending (or the last batch failed); NotReady after `timeout_s`."""
        self.notify()
        deadline = time.monotonic() + timeout_s
        while not self._idle.wait(timeout=0.05):
            if time.monotonic() > deadline:
                raise NotReady(f"importance scoring still pending after {timeout_s} s; the model server is slow "
                               "or down (see the worker's last_error)")

    def close(self, *, timeout_s: float = 30.0) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait()
            self._wake.clear()
            while not self._stop:
                try:
                    done = score_pending(self._stream, self._scorer, max_memories=self._batch_size)
                except Exception as exc:  # keep the thread alive; the memories stay pending
                    logger.warning("importance scoring failed for %s: %s", self._stream.agent, exc)
                    self.last_error = exc
                    break
                self.num_scored += done
                if done == 0:
                    break
            if not self._wake.is_set():
                self._idle.set()
