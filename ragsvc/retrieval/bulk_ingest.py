"""Bulk ingest, pipelined: the next batch is chunked and embedded while the previous one commits.

A bulk load alternates two kinds of work that use different resources: preparing a batch (tokenising,
chunking, the embedding model's forward passes) and committing it (the duckdb transaction, then the ANN and
BM25 updates). Run one after the other, each waits for the other. Here a thread prepares batches into a
bounded queue while the calling thread commits them, so the cores embedding batch n+1 are not idle while
batch n is written, and the write of batch n does not wait for the model.

- **Backpressure.** The queue holds at most `queue_depth` prepared batches: a slow disk stops the preparing
  thread rather than letting prepared vectors pile up in memory.
- **Group commit.** Batches that queued while a commit ran are committed together in one transaction (at most
  `max_group`), so a fast embedder is not held to one transaction's fixed cost per batch.
- **Acknowledgement and crash safety.** `on_commit` is called for each batch after its transaction commits
  (and the indexes applied it), never before, so whatever was reported survives kill -9; a group is
  all-or-nothing like a single batch. A document is skipped on a later run when its content hash is stored,
  which makes running the same load again after an interruption a resume: nothing acknowledged is prepared
  again, nothing is duplicated, and whatever was not acknowledged is written then.
- **Whole batches to the model.** A batch's new chunk texts go to the store's embedder in one call, which
  sorts all of them by token count into its forward passes (a text is padded to its batch's longest, so the
  wider the sort, the less padding), rather than in the short slices the store embeds a request in so that
  searches can go between them. Meant for a store no search is using meanwhile (the CLI, the benchmark):
  the model is then called from the preparing thread alone.
- **Errors.** A batch whose preparation fails (`RagsvcError`, say a document the chunker refuses) is reported
  to `on_error` with its documents and the rest of the load goes on, when `skip` is asked; otherwise the load
  stops after committing what was prepared before it. A commit failure always stops the load.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from ragsvc.errors import BatchTooLarge, InvalidInput, RagsvcError
from ragsvc.retrieval.ingest import PreparedBatch, document_id
from ragsvc.store.files import Entry, NoText, Unreadable
from ragsvc.types import DocumentInput

if TYPE_CHECKING:
    from ragsvc.retrieval.vector_store import EmbedTexts, VectorStore

OnError = Literal["skip", "stop"]
MAX_QUEUE_DEPTH = 64


@dataclass(frozen=True, slots=True)
class BatchAcknowledged:
    """One batch made durable: how many of its documents were new or changed, and their chunks."""

    num_documents: int
    num_written: int
    num_chunks: int


@dataclass(frozen=True, slots=True)
class BatchFailed:
    """A batch that could not be prepared: its documents' ids (None where derived from the text) and why."""

    document_ids: tuple[str | None, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class BulkReport:
    num_documents: int
    """Documents acknowledged (stored now, or already stored unchanged)."""
    num_written: int
    """Of those, the documents this run wrote (new or changed)."""
    num_chunks: int
    num_commits: int
    """Transactions: fewer than batches when batches queued behind a commit and were grouped."""
    seconds: float
    failed: tuple[BatchFailed, ...] = ()


@dataclass(frozen=True, slots=True)
class _Failure:
    batch: Sequence[DocumentInput]
    error: BaseException
    fatal: bool = False
    """The source of batches itself failed: nothing more will come, whatever `on_error` says."""


_END = object()


def ingest_pipelined(store: VectorStore, name: str, batches: Iterable[Sequence[DocumentInput]], *,
                     queue_depth: int = 2, max_group: int = 4, on_error: OnError = "stop",
                     embed: EmbedTexts | None = None,
                     on_commit: Callable[[BatchAcknowledged], None] | None = None,
                     on_failure: Callable[[BatchFailed], None] | None = None) -> BulkReport:
    """Prepare `batches` in a thread, commit them here in order; see the module docstring for the guarantees.
    Raises the first error that stops the load (after committing every batch prepared before it)."""
    if not 1 <= queue_depth <= MAX_QUEUE_DEPTH:
        raise ValueError(f"queue_depth must be in [1, {MAX_QUEUE_DEPTH}], got {queue_depth}")
    if max_group < 1:
        raise ValueError(f"max_group must be at least 1, got {max_group}")
    started = time.perf_counter()
    embed = embed or _whole_batches(store)
    prepared: queue.Queue[object] = queue.Queue(maxsize=queue_depth)
    stop = threading.Event()
    producer = threading.Thread(target=_prepare_all, args=(store, name, batches, prepared, stop, embed, on_error),
                                name=f"prepare-{name}", daemon=True)
    producer.start()
    tally = _Tally()
    try:
        finished = False
        while not finished:
            group, finished, failure = _next_group(prepared, max_group)
            to_write = [b for b in group if b.documents]  # a batch stored already costs no transaction
            if to_write:
                store.commit_group(to_write)
                tally.num_commits += 1
            for batch in group:  # acknowledged only now: committed, and applied to the indexes
                tally.acknowledge(BatchAcknowledged(len(batch.ids), len(batch.documents), batch.num_chunks),
                                  on_commit)
            if failure is not None:
                if failure.fatal or on_error != "skip" or not isinstance(failure.error, RagsvcError):
                    raise failure.error
                tally.fail(BatchFailed(tuple(d.id for d in failure.batch), str(failure.error)), on_failure)
    finally:
        stop.set()
        _drain(prepared)
        producer.join()
    return BulkReport(tally.num_documents, tally.num_written, tally.num_chunks, tally.num_commits,
                      round(time.perf_counter() - started, 3), tuple(tally.failed))


def _whole_batches(store: VectorStore) -> EmbedTexts:
    """The store's own embedder, not its search-friendly slices: each batch's texts in one call ("whole
    batches to the model" above)."""
    def embed(texts: list[str]) -> np.ndarray:
        return store.embedder.embed_documents(texts)  # (len(texts), dim)

    return embed


@dataclass
class _Tally:
    num_documents: int = 0
    num_written: int = 0
    num_chunks: int = 0
    num_commits: int = 0
    failed: list[BatchFailed] = field(default_factory=list)

    def acknowledge(self, ack: BatchAcknowledged, report: Callable[[BatchAcknowledged], None] | None) -> None:
        self.num_documents += ack.num_documents
        self.num_written += ack.num_written
        self.num_chunks += ack.num_chunks
        if report is not None:
            report(ack)

    def fail(self, failure: BatchFailed, report: Callable[[BatchFailed], None] | None) -> None:
        self.failed.append(failure)
        if report is not None:
            report(failure)


def _prepare_all(store: VectorStore, name: str, batches: Iterable[Sequence[DocumentInput]],
                 prepared: queue.Queue[object], stop: threading.Event, embed: EmbedTexts | None,
                 on_error: OnError) -> None:
    """The preparing thread: each batch into the queue (blocking while it is full), then the end marker.
    A failure is queued in the batch's place, so the committer sees it in order."""
    try:
        for batch in batches:
            if stop.is_set():
                return
            for item in _prepare(store, name, batch, embed, on_error):
                if not _put(prepared, item, stop):
                    return
    except Exception as exc:  # noqa: BLE001 - the batches iterable itself failed (a file read, say)
        _put(prepared, _Failure((), exc, fatal=True), stop)
        return
    _put(prepared, _END, stop)


def _prepare(store: VectorStore, name: str, batch: Sequence[DocumentInput], embed: EmbedTexts | None,
             on_error: OnError) -> list[object]:
    """The batch prepared; or, when it fails with a user error and `skip` is asked, its documents prepared one
    by one, so only the documents at fault are reported and the others still go in. A batch of several refused
    for its size alone (`store.max_write_bytes`, `store.max_batch_chunks`) is halved whatever `on_error` says:
    no document is at fault."""
    try:
        return [store.prepare_documents(name, batch, embed=embed)]
    except BatchTooLarge as exc:
        if len(batch) == 1:
            return [_Failure(batch, exc)]
        half = len(batch) // 2
        return [*_prepare(store, name, batch[:half], embed, on_error),
                *_prepare(store, name, batch[half:], embed, on_error)]
    except RagsvcError as exc:
        if on_error != "skip" or len(batch) == 1:
            return [_Failure(batch, exc)]
    except Exception as exc:  # noqa: BLE001 - handed to the committing thread, which stops
        return [_Failure(batch, exc)]
    return [item for doc in batch for item in _prepare(store, name, [doc], embed, on_error)]


def _put(prepared: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    """Queue `item`, waiting while the queue is full unless the committer has stopped; False if it stopped."""
    while not stop.is_set():
        try:
            prepared.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _next_group(prepared: queue.Queue[object], max_group: int
                ) -> tuple[list[PreparedBatch], bool, _Failure | None]:
    """The next prepared batch (waiting for it) and those queued behind it, up to `max_group`; whether the end
    was reached; the failure that ended the group, if one did."""
    group: list[PreparedBatch] = []
    item = prepared.get()
    while True:
        if item is _END:
            return group, True, None
        if isinstance(item, _Failure):
            return group, False, item
        assert isinstance(item, PreparedBatch)
        group.append(item)
        if len(group) >= max_group:
            return group, False, None
        try:
            item = prepared.get_nowait()
        except queue.Empty:
            return group, False, None


def _drain(prepared: queue.Queue[object]) -> None:
    """Empty the queue so a producer blocked on a full queue sees the stop flag."""
    while True:
        try:
            prepared.get_nowait()
        except queue.Empty:
            return


def batch_entries(entries: Iterable[Entry], *, batch_size: int, on_error: OnError,
                  on_skip: Callable[[Unreadable | NoText], None]) -> Iterator[list[DocumentInput]]:
    """Documents into batches of at most `batch_size`; an unreadable entry goes to `on_skip` (`skip`) or stops
    the load with InvalidInput naming it (`stop`). A file with no text goes to `on_skip` whatever `on_error`
    says: there is nothing in it to fix or to store. A document id already in the batch starts a new batch, so
    a corpus that repeats an id stores its last version instead of refusing the batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    batch: list[DocumentInput] = []
    ids: set[str] = set()
    for entry in entries:
        if isinstance(entry, NoText):
            on_skip(entry)
            continue
        if isinstance(entry, Unreadable):
            if on_error != "skip":
                raise InvalidInput(f"{entry} (pass --on-error skip to skip it and go on)")
            on_skip(entry)
            continue
        doc_id = document_id(entry)
        if doc_id in ids or len(batch) >= batch_size:
            yield batch
            batch, ids = [], set()
        batch.append(entry)
        ids.add(doc_id)
    if batch:
        yield batch
