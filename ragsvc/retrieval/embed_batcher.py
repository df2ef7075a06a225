"""Concurrent embedding requests coalesced into shared batched forward passes, on one or more model copies.

Under load the model, not the index, bounds a search server's throughput: an HNSW lookup takes a tenth of
a millisecond, MiniLM on one short text several, and 32 threads each running their own forward pass mostly
contend for the same cores. An EmbedBatcher runs at most `max_passes` passes at a time, each over the texts
queued when it starts. No timer and no extra thread ("natural batching"): a caller that finds a pass slot
free and some of its own texts still queued embeds the head of the queue, and every caller returns as soon
as its own texts are done (none keeps serving others); a lone caller embeds at once, so latency without
load is unchanged. A failing pass fails every request in it.

Why more than one pass at a time: a pass over a few short texts does not parallelise inside torch (its
kernels split work only past a size threshold), so one pass at a time keeps about one core busy however
many the machine has. `BatchedEmbedder` therefore holds `lanes` copies of the model ("lanes"), each with
its own tokenizer, and runs up to one pass per lane at once; the server gives each lane `cores / lanes`
torch threads (`threads_per_lane`). Copies, not one model shared by threads: a HF fast tokenizer keeps its
padding and truncation settings as state that each call sets (the length-sorted path counts tokens
unpadded, then pads), so two passes tokenising on one tokenizer can hand one of them unpadded rows (seen
under load as "Unable to create tensor"). Every use of a copy, passes and the chunker's token counting
alike, holds that lane.

The lanes are handed out searches first (`ModelLock`): a search waits for the model, an ingest for its
commit and its caller expects seconds, so when a lane frees, a waiting query pass goes before a waiting
document pass, and so do query texts still queued for a pass that has not asked for its lane yet (a query
pass claims its slot only as an earlier one ends, a moment after that pass freed its lane, so counting only
passes already waiting for a lane let a document pass slip in first). Never more than `MAX_OVERTAKES` times
in a row, so a steady stream of searches cannot starve an ingest. A document pass takes its texts from the
queue only once it holds its lane, so a pass that waited behind searches embeds every ingest text queued
meanwhile in one go (the pass's fixed cost shared). A large ingest embeds in slices of `MAX_BATCH` texts,
each taking a lane on its own, so searches arriving meanwhile wait for one slice, not the whole request.

The chunker's token counting takes no lane when the model counts with a tokenizer of its own
(`tokenizes_privately`: a copy no pass touches, under its own lock): it takes a fraction of a millisecond,
and waiting for a lane behind several query passes would only hold an ingest's client longer and add a
hand-off to every lane's queue. A model without one counts on a lane, a short text
(`MAX_URGENT_TOKENIZE_CHARS`) with the searches' priority.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from ragsvc.embed.embedder import Embedder

MAX_BATCH = 64
"""Texts per forward pass: past this, padding to the longest text costs more than the batch saves."""
MAX_SHARED_DOCUMENTS = 32
"""Ingest requests with more chunks than this embed on their own (a bulk load is a batch already)."""
MAX_OVERTAKES = 4
"""Query passes that may go before one waiting document pass. Fewer cut an ingest's wait for its pass but make each
ingest dearer and the search tail longer (likely because a document pass then embeds fewer ingests at once, and
query passes wait behind document passes more often); more make ingests wait longer and dearer too. `ragsvc bench
load` on a Zen 4, one run each, 8 and 16 beside one run of 4, 0 and 2 beside another (0.669 / 0.673, an ingest
2.27 / 2.22 searches of CPU, ingest p50 176 / 171 ms, search p99 under the mix 160 / 140 ms): 0 gave a ratio of
0.626 (an ingest 2.71 searches, p50 88 ms, search p99 209 ms), 2 0.642 (2.54, 141, 170), 8 0.650 (2.39, 219, 143),
16 0.636 (2.48, 228, 134)."""
MAX_URGENT_TOKENIZE_CHARS = 4096
"""Texts up to this long are tokenised for the chunker with a search's priority (it takes well under a pass)."""
MAX_AUTO_LANES = 4
"""Model copies `lanes_for(0, ...)` picks at most: past a few, each copy's memory buys little (passes also
contend for memory bandwidth), and a large model (EmbeddingGemma) would hold several GB."""


def lanes_for(setting: int, num_cores: int) -> int:
    """Model copies to run passes on: `setting`, or with 0 one per core up to MAX_AUTO_LANES."""
    if setting < 0:
        raise ValueError(f"embed lanes must be 0 (one per core) or more, got {setting}")
    return setting or max(1, min(num_cores, MAX_AUTO_LANES))


def threads_per_lane(setting: int, *, lanes: int, num_cores: int) -> int:
    """torch threads for the embedding model: `setting`, or with 0 the cores shared out between the lanes
    (one lane: 0, torch's own choice, a thread per core)."""
    if setting:
        return setting
    return 0 if lanes <= 1 else max(1, num_cores // lanes)


def limit_model_threads(num_threads: int) -> None:
    """Run torch's CPU kernels on `num_threads` threads in this process (0: leave torch's choice, a thread per
    core). Fewer threads a pass leave cores to the other lanes' passes, requests, catalog statements and
    index lookups, at the cost of slower single passes; `threads_per_lane` picks the count and
    `ragsvc bench load` measures it. The CLI's passive OpenMP wait policy keeps idle torch threads from
    spinning."""
    if num_threads:
        import torch  # heavy import, kept out of module load

        torch.set_num_threads(num_threads)


class ModelLock:
    """`lanes` slots handed out one per holder; `urgent` holders (query passes) go before waiting normal ones
    (document passes, token counting), with at most `max_overtakes` urgent grants while a normal holder
    waits. `urgent_queued()` says whether urgent work is on its way that has not asked for a slot yet; a
    normal holder lets it go first too (within the same bound). `hold` yields the slot's number, so each
    holder uses its own model copy."""

    def __init__(self, *, lanes: int = 1, max_overtakes: int = MAX_OVERTAKES,
                 urgent_queued: Callable[[], bool] = lambda: False) -> None:
        if max_overtakes < 0:
            raise ValueError(f"max_overtakes must be at least 0, got {max_overtakes}")
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, got {lanes}")
        self.lanes = lanes
        self.max_overtakes = max_overtakes
        self._urgent_queued = urgent_queued
        self._cond = threading.Condition(threading.Lock())
        self._free = list(range(lanes))
        self._waiting = {True: 0, False: 0}  # urgent -> number of waiters
        self._overtakes = 0  # urgent grants since a normal waiter began waiting

    @property
    def num_free(self) -> int:
        return len(self._free)

    @contextmanager
    def hold(self, *, urgent: bool) -> Iterator[int]:
        with self._cond:
            self._waiting[urgent] += 1
            try:
                while not self._may_take(urgent):
                    self._cond.wait()
            finally:
                self._waiting[urgent] -= 1
            lane = self._free.pop()
            if not urgent:
                self._overtakes = 0
            elif self._waiting[False]:
                self._overtakes += 1
                self._cond.notify_all()  # the queued work it deferred to may be this one: look again
        try:
            yield lane
        finally:
            with self._cond:
                self._free.append(lane)
                self._cond.notify_all()

    def _may_take(self, urgent: bool) -> bool:
        if not self._free:
            return False
        normal_is_due = self._waiting[False] > 0 and self._overtakes >= self.max_overtakes
        if urgent:
            return not normal_is_due
        return normal_is_due or (self._waiting[True] == 0 and not self._urgent_queued())


@dataclass
class _Pending:
    text: str
    waiter: threading.Condition
    """Its caller's own condition (over the batcher's lock): a pass wakes only the callers whose texts it
    resolved, and a freed slot only the caller at the queue's head."""
    taken: bool = False
    """In a pass (running or done)."""
    resolved: bool = False
    vector: np.ndarray | None = None
    error: BaseException | None = None


class EmbedBatcher:
    """Texts of concurrent callers embedded in shared passes, at most `max_passes` at a time.

    `hold` is a model lane: a context manager yielding what `embed` needs to run the pass. With
    `take_when_held`, a caller that may start a pass first waits for the lane and only then takes the head of
    the queue, so everything queued while the lane was busy goes into that pass. Document passes do so: they
    wait behind searches by design, and their batch then holds every ingest that arrived meanwhile instead of
    one, sharing the model's fixed cost per pass. Query passes take their texts when they claim a slot: their
    wait for a lane is short, and a bigger batch would mostly pad short queries to the longest one.

    Each caller waits on a condition of its own, and a pass ends by waking the callers whose texts it
    resolved plus the one at the queue's head (who can start the next pass). One condition shared by all,
    woken with notify_all, had every waiting request thread (~30 under `ragsvc bench load`) take the GIL
    after every pass only to wait again: 10% of the search server's GIL-held samples were in notify."""

    def __init__(self, embed: Callable[[Sequence[str], Any], np.ndarray], *, max_batch: int = MAX_BATCH,
                 max_passes: int = 1, hold: Callable[[], AbstractContextManager[Any]] = nullcontext,
                 take_when_held: bool = False) -> None:
        """`embed(texts, held)` -> (len(texts), dim): one pass, `held` being what `hold()` yielded."""
        if max_batch < 1 or max_passes < 1:
            raise ValueError(f"max_batch and max_passes must be at least 1, got {max_batch} and {max_passes}")
        self._embed = embed
        self._hold = hold
        self._take_when_held = take_when_held
        self.max_batch = max_batch
        self.max_passes = max_passes
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._passes = 0  # passes running now (or waiting for their lane)
        self._unheld = 0  # passes that claimed a slot and do not hold their lane yet

    @property
    def num_passes(self) -> int:
        return self._passes

    @property
    def has_queued(self) -> bool:
        """Texts wait that no pass holding a lane has taken yet: still queued, or taken by a pass on its way to
        its lane. Counting the queue alone left a moment (the texts taken, the lane not yet asked for) in which
        a lane looked wanted by nobody, and a document pass woken then went first. Read without the lock: a
        stale answer only moves one lane grant (ModelLock looks again at every grant and release)."""
        return bool(self._queue) or self._unheld > 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32: what `embed(texts)` returns, computed in passes shared with other callers."""
        if not texts:
            return np.zeros((0, 0), np.float32)
        waiter = threading.Condition(self._lock)
        mine = [_Pending(t, waiter) for t in texts]
        with self._lock:
            self._queue.extend(mine)
        while self._claim_pass(mine):
            self._run()
        rows = []
        for p in mine:
            if p.error is not None:
                raise p.error
            assert p.vector is not None
            rows.append(p.vector)
        return np.stack(rows)

    def _claim_pass(self, mine: list[_Pending]) -> bool:
        """True once a pass slot is free and some of this caller's texts are still queued (the slot is then
        its own to run); False when all of its texts are done. Waits otherwise (its texts are in others'
        passes, or every slot is busy)."""
        with self._lock:
            while not all(p.resolved for p in mine):
                if self._passes < self.max_passes and not all(p.taken for p in mine):
                    self._passes += 1
                    self._unheld += 1  # in the same step as the claim, so `has_queued` never reads False between
                    return True
                mine[0].waiter.wait()
            return False

    def _run(self) -> None:
        """One pass over the queue's head, taken before or once the lane is held (`take_when_held`); it may
        be empty: others' passes took every text meanwhile."""
        batch: list[_Pending] = [] if self._take_when_held else self._take()
        unheld = True
        try:
            with self._hold() as held:
                with self._lock:  # before the lane can be released, or a waiter would read a stale True
                    self._unheld -= 1
                    unheld = False
                if self._take_when_held:
                    batch = self._take()
                if batch:
                    vectors = np.asarray(self._embed([p.text for p in batch], held), dtype=np.float32)
                    for p, v in zip(batch, vectors, strict=True):  # vectors: (len(batch), dim)
                        p.vector = v
        except BaseException as exc:  # every request of the failed pass gets the error
            for p in batch:
                p.error = exc
        with self._lock:
            if unheld:  # `hold` itself failed
                self._unheld -= 1
            for p in batch:
                p.resolved = True
            self._passes -= 1
            waiters = {id(p.waiter): p.waiter for p in batch}
            if self._queue:  # a slot is free: the head's caller starts the next pass
                waiters.setdefault(id(self._queue[0].waiter), self._queue[0].waiter)
            for waiter in waiters.values():
                waiter.notify()

    def _take(self) -> list[_Pending]:
        """The queue's head, up to `max_batch` texts, marked taken."""
        with self._lock:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            for p in batch:
                p.taken = True
            if self._queue and self._passes < self.max_passes:  # more than one pass's worth queued
                self._queue[0].waiter.notify()
        return batch


class BatchedEmbedder:
    """An Embedder whose query and small document embeddings are batched across concurrent callers, and run on
    `replicas` (further copies of the same model) in parallel with it."""

    def __init__(self, embedder: Embedder, *, replicas: Sequence[Embedder] = ()) -> None:
        self.inner = embedder
        self.id, self.dim = embedder.id, embedder.dim
        for replica in replicas:
            if replica.id != embedder.id or replica.dim != embedder.dim:
                raise ValueError(f"a model copy computes {replica.id!r}, not {embedder.id!r}: every lane must be "
                                 "built from the same embed settings")
        self._models: list[Embedder] = [embedder, *replicas]
        self._model_lock = ModelLock(lanes=len(self._models), urgent_queued=lambda: self._queries.has_queued)
        self._queries = EmbedBatcher(self._query_pass, max_passes=len(self._models),
                                     hold=lambda: self._model_lock.hold(urgent=True))
        self._documents = EmbedBatcher(self._document_pass, max_passes=len(self._models),
                                       hold=lambda: self._model_lock.hold(urgent=False), take_when_held=True)

    @property
    def lanes(self) -> int:
        return len(self._models)

    def embed_query(self, text: str) -> np.ndarray:
        return self._queries.embed([text])[0]  # (dim,)

    def embed_documents(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        if progress:  # one call, so the embedder's progress bar covers the whole request
            with self._model_lock.hold(urgent=False) as lane:
                return self._models[lane].embed_documents(texts, progress=True)
        if len(texts) > MAX_SHARED_DOCUMENTS:
            return self._sliced_documents(texts)
        return self._documents.embed(texts).reshape(len(texts), self.dim)

    def count_tokens(self, text: str) -> int:
        if getattr(self.inner, "tokenizes_privately", False):
            return self.inner.count_tokens(text)
        with self._model_lock.hold(urgent=len(text) <= MAX_URGENT_TOKENIZE_CHARS) as lane:
            return self._models[lane].count_tokens(text)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        if getattr(self.inner, "tokenizes_privately", False):
            return self.inner.token_offsets(text)
        with self._model_lock.hold(urgent=len(text) <= MAX_URGENT_TOKENIZE_CHARS) as lane:
            return self._models[lane].token_offsets(text)

    def __getattr__(self, name: str) -> object:  # max_seq_length, prefixes, ...: the wrapped embedder's
        return getattr(self.inner, name)

    def _query_pass(self, texts: Sequence[str], lane: int) -> np.ndarray:
        model = self._models[lane]
        many = getattr(model, "embed_queries", None)
        if many is not None:
            return np.asarray(many(texts), dtype=np.float32)
        return np.stack([model.embed_query(t) for t in texts])

    def _document_pass(self, texts: Sequence[str], lane: int) -> np.ndarray:
        return self._models[lane].embed_documents(texts)

    def _locked_documents(self, texts: Sequence[str]) -> np.ndarray:
        with self._model_lock.hold(urgent=False) as lane:
            return self._document_pass(texts, lane)

    def _sliced_documents(self, texts: Sequence[str]) -> np.ndarray:
        """A large request in slices of MAX_BATCH texts of similar length (sorted, as the embedder batches them),
        each under a lane on its own; rows come back in the caller's order."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), MAX_BATCH):
            rows = order[start : start + MAX_BATCH]
            out[rows] = self._locked_documents([texts[i] for i in rows])  # (len(rows), dim)
        return out
