"""Concurrent embedding requests coalesced into shared batched forward passes.

Under load the model, not the index, bounds a search server's throughput: an HNSW lookup takes a tenth of
a millisecond, MiniLM on one short text several, and 32 threads each running their own forward pass mostly
contend for the same cores. An EmbedBatcher runs one pass at a time over every text queued meanwhile. No
timer and no extra thread ("natural batching"): the first caller to find the model idle embeds the queue,
hands each caller its rows, and once its own texts are done passes the queue on to the next waiter; a lone
caller embeds at once, so latency without load is unchanged. A failing pass fails every request in it.

`BatchedEmbedder` puts two batchers (queries; small document batches of one ingest request) in front of an
Embedder, so the store's search and ingest paths share passes without knowing about it. Every use of the
wrapped model, passes and the chunker's token counting alike, holds one lock: a HF fast tokenizer keeps
its padding and truncation settings as state that each call sets, so two threads tokenising at once can
hand one of them unpadded rows (seen under load as "Unable to create tensor"). Passes are serialised
anyway by design; the lock makes that hold across the two batchers too.

That lock puts searches first (`ModelLock`): a search waits for the model, an ingest for its commit and
its caller expects seconds, so when the model frees, a waiting query pass goes before a waiting document
pass. Never more than `MAX_OVERTAKES` times in a row, so a steady stream of searches cannot starve an
ingest. A large ingest embeds in slices of `MAX_BATCH` texts, each taking the lock on its own, so searches
arriving meanwhile wait for one slice, not the whole request. The chunker's token counting of a short text
(`MAX_URGENT_TOKENIZE_CHARS`) queues with the searches, not behind them: it takes a fraction of a
millisecond, and an ingest waiting for it behind several query passes only holds its client longer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ragsvc.embed.embedder import Embedder

MAX_BATCH = 64
"""Texts per forward pass: past this, padding to the longest text costs more than the batch saves."""
MAX_SHARED_DOCUMENTS = 32
"""Ingest requests with more chunks than this embed on their own (a bulk load is a batch already)."""
MAX_OVERTAKES = 4
"""Query passes that may go before one waiting document pass."""
MAX_URGENT_TOKENIZE_CHARS = 4096
"""Texts up to this long are tokenised for the chunker with a search's priority (it takes well under a pass)."""


def limit_model_threads(num_threads: int) -> None:
    """Run torch's CPU kernels on `num_threads` threads in this process (0: leave torch's choice, a thread per
    core). The server's forward passes are serialised under the model lock while requests, catalog statements
    and index lookups run on other threads; fewer torch threads leave cores to those, at the cost of slower
    passes. Which wins depends on the machine and the mix, so it is a setting and `ragsvc bench load`
    measures it; the CLI's passive OpenMP wait policy already keeps idle torch threads from spinning."""
    if num_threads:
        import torch  # heavy import, kept out of module load

        torch.set_num_threads(num_threads)


class ModelLock:
    """A mutex whose `urgent` holders (query passes) go before waiting normal ones (document passes, token
    counting), with at most `max_overtakes` urgent grants while a normal holder waits."""

    def __init__(self, *, max_overtakes: int = MAX_OVERTAKES) -> None:
        if max_overtakes < 0:
            raise ValueError(f"max_overtakes must be at least 0, got {max_overtakes}")
        self.max_overtakes = max_overtakes
        self._cond = threading.Condition(threading.Lock())
        self._held = False
        self._waiting = {True: 0, False: 0}  # urgent -> number of waiters
        self._overtakes = 0  # urgent grants since a normal waiter began waiting

    @contextmanager
    def hold(self, *, urgent: bool) -> Iterator[None]:
        with self._cond:
            self._waiting[urgent] += 1
            try:
                while not self._may_take(urgent):
                    self._cond.wait()
            finally:
                self._waiting[urgent] -= 1
            self._held = True
            if not urgent:
                self._overtakes = 0
            elif self._waiting[False]:
                self._overtakes += 1
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()

    def _may_take(self, urgent: bool) -> bool:
        if self._held:
            return False
        normal_is_due = self._waiting[False] > 0 and self._overtakes >= self.max_overtakes
        return not normal_is_due if urgent else (self._waiting[True] == 0 or normal_is_due)


@dataclass
class _Pending:
    text: str
    wake: threading.Event = field(default_factory=threading.Event)
    """Set when the text is embedded, or when its caller is made the one to embed the queue."""
    lead: bool = False
    resolved: bool = False
    vector: np.ndarray | None = None
    error: BaseException | None = None


class EmbedBatcher:
    def __init__(self, embed: Callable[[Sequence[str]], np.ndarray], *, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._embed = embed
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._busy = False  # whether some caller is embedding the queue now

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32: what `embed(texts)` returns, computed in passes shared with other callers."""
        mine = [_Pending(t) for t in texts]
        with self._lock:
            self._queue.extend(mine)
            if not self._busy and mine:
                self._busy = mine[0].lead = True
        for p in mine:
            while not p.resolved:
                if p.lead:
                    self._serve(mine)
                else:
                    p.wake.wait()
                    p.wake.clear()
        rows = []
        for p in mine:
            if p.error is not None:
                raise p.error
            assert p.vector is not None
            rows.append(p.vector)
        return np.stack(rows) if rows else np.zeros((0, 0), np.float32)

    def _serve(self, mine: list[_Pending]) -> None:
        """Embed queued batches until all of `mine` are done, then hand the queue to the next waiter (no caller
        keeps serving others after its own texts are embedded)."""
        while not all(p.resolved for p in mine):
            with self._lock:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                vectors = np.asarray(self._embed([p.text for p in batch]), dtype=np.float32)  # (len(batch), dim)
                for p, v in zip(batch, vectors, strict=True):
                    p.vector = v
            except BaseException as exc:  # every request of the failed pass gets the error
                for p in batch:
                    p.error = exc
            for p in batch:
                p.resolved = True
                p.wake.set()
        with self._lock:
            if self._queue:
                self._queue[0].lead = True
                self._queue[0].wake.set()
            else:
                self._busy = False


class BatchedEmbedder:
    """An Embedder whose query and small document embeddings are batched across concurrent callers."""

    def __init__(self, embedder: Embedder) -> None:
        self.inner = embedder
        self.id, self.dim = embedder.id, embedder.dim
        self._model_lock = ModelLock()
        self._queries = EmbedBatcher(self._locked_queries)
        self._documents = EmbedBatcher(self._locked_documents)

    def embed_query(self, text: str) -> np.ndarray:
        return self._queries.embed([text])[0]  # (dim,)

    def embed_documents(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        if progress:  # one call, so the embedder's progress bar covers the whole request
            with self._model_lock.hold(urgent=False):
                return self.inner.embed_documents(texts, progress=True)
        if len(texts) > MAX_SHARED_DOCUMENTS:
            return self._sliced_documents(texts)
        return self._documents.embed(texts).reshape(len(texts), self.dim)

    def count_tokens(self, text: str) -> int:
        with self._model_lock.hold(urgent=len(text) <= MAX_URGENT_TOKENIZE_CHARS):
            return self.inner.count_tokens(text)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        with self._model_lock.hold(urgent=len(text) <= MAX_URGENT_TOKENIZE_CHARS):
            return self.inner.token_offsets(text)

    def __getattr__(self, name: str) -> object:  # max_seq_length, prefixes, ...: the wrapped embedder's
        return getattr(self.inner, name)

    def _locked_queries(self, texts: Sequence[str]) -> np.ndarray:
        many = getattr(self.inner, "embed_queries", None)
        with self._model_lock.hold(urgent=True):
            if many is not None:
                return np.asarray(many(texts), dtype=np.float32)
            return np.stack([self.inner.embed_query(t) for t in texts])

    def _locked_documents(self, texts: Sequence[str]) -> np.ndarray:
        with self._model_lock.hold(urgent=False):
            return self.inner.embed_documents(texts)

    def _sliced_documents(self, texts: Sequence[str]) -> np.ndarray:
        """A large request in slices of MAX_BATCH texts of similar length (sorted, as the embedder batches them),
        each under the lock on its own; rows come back in the caller's order."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), MAX_BATCH):
            rows = order[start : start + MAX_BATCH]
            out[rows] = self._locked_documents([texts[i] for i in rows])  # (len(rows), dim)
        return out
