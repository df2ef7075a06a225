"""VectorStore: the composition of catalog (truth), embedder and per-collection ANN indexes.

Writes go to duckdb first, in one transaction per batch; only after the commit (the acknowledgement) are
the in-memory indexes updated. A write has two halves: `prepare_documents` (validate, skip unchanged
documents by content hash, chunk, embed; no lock, nothing written) and `commit` (one transaction under the
collection's writer lock, then the indexes). Batches that commit at the same time share one transaction
(`group_commit.py`), and a bulk load prepares its next batch while the previous one commits. Index files
are saved now and then and on close; on open each index replays the chunks above its watermark, so a killed
process never loses an acknowledged document.

Concurrency: one writer per collection, readers never wait for it. Each collection has a writer lock (held for
a commit or delete: catalog transaction, index update, periodic save; never while embedding) and a readers-
writer lock over its in-memory indexes. Searches take only the read side; a writer takes the write side just
to apply a committed batch to the ANN and BM25 structures (and to merge the BM25 index when saving it).
Catalog reads (filters, hydration, lookups) use per-thread duckdb cursors, so they see committed data without
the catalog's write lock. A search that runs between a batch's commit and its apply sees the collection as it
was before the batch: filtered ids the index does not hold yet are skipped, deleted ones are not hydrated.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ragsvc.cluster.collection import RayCollectionIndex, check_placement, open_collection_index
from ragsvc.cluster.placement import check_deadline_ms
from ragsvc.cluster.runtime import ClusterInfo
from ragsvc.embed.embedder import DEFAULT_EMBEDDER, Embedder, SentenceTransformerEmbedder
from ragsvc.errors import CollectionNotFound, Conflict, DimensionMismatch, InvalidInput
from ragsvc.index.collection_index import CollectionIndex
from ragsvc.index.lexical_collection import open_lexical
from ragsvc.index.lexical_index import LexicalIndex
from ragsvc.index.spec import IndexLimits, IndexSpec, check_override, check_spec
from ragsvc.index.unit_vectors import NotNormalisable, unit_vector
from ragsvc.retrieval.embed_batcher import BatchedEmbedder
from ragsvc.retrieval.group_commit import GroupCommit
from ragsvc.retrieval.ingest import (
    PreparedBatch,
    assemble,
    chunk_texts,
    content_hash,
    merge_batches,
    split_documents,
    validate_batch,
)
from ragsvc.retrieval.ingest_write_log import WriteLog
from ragsvc.retrieval.read_write_lock import ReadWriteLock
from ragsvc.retrieval.write_limits import WriteLimits, check_batch, check_metadata
from ragsvc.store.catalog import Catalog
from ragsvc.store.filters import FilterLimits
from ragsvc.store.records import CollectionRecord, WriteResult
from ragsvc.types import ChunkId, DocumentId, DocumentInput, Hit, SearchResult, ServedBy, is_collection_name

logger = logging.getLogger(__name__)

EmbedTexts = Callable[[list[str]], np.ndarray]
"""Texts -> (len(texts), dim) float32 normalised vectors: another way to embed a prepared batch's new chunks."""

CATALOG_FILE = "catalog.duckdb"


@dataclass(frozen=True, slots=True)
class CollectionInfo(CollectionRecord):
    """A collection's stored settings plus its current size."""

    num_documents: int
    num_chunks: int


class VectorStore:
    """Collections of documents, searchable by text or vector. Thread-safe; one per data directory."""

    def __init__(self, data_dir: Path, *, embedder: Embedder | None = None, embedder_name: str = DEFAULT_EMBEDDER,
                 embedder_factory: Callable[[], Embedder] | None = None,
                 save_interval_s: float = 30.0, index_limits: IndexLimits | None = None,
                 filter_limits: FilterLimits | None = None, write_limits: WriteLimits | None = None,
                 cluster: ClusterInfo | None = None,
                 embed_lanes: int = 1) -> None:
        """`embed_lanes` > 1 runs searches' and small ingests' forward passes on that many copies of the model at
        once (embed_batcher.py), the copies built by `embedder_factory` (without one, a given `embedder` runs
        alone: a copy by name could compute another function)."""
        self.data_dir = Path(data_dir)
        self.catalog = Catalog(self.data_dir / CATALOG_FILE)
        self._embedder = embedder
        # built on first use, so commands that never embed (list, delete, stats) never load a model
        self._embedder_factory = embedder_factory or (lambda: SentenceTransformerEmbedder(embedder_name))
        self._embed_lanes = embed_lanes if embedder is None or embedder_factory is not None else 1
        self._save_interval_s = save_interval_s
        self.index_limits = index_limits or IndexLimits()
        self.filter_limits = filter_limits or FilterLimits()
        self.write_limits = write_limits or WriteLimits()
        self.cluster = cluster
        """The Ray cluster this process joined: collections placed on `ray` are served there (None: refused)."""
        self._indexes: dict[str, CollectionIndex | RayCollectionIndex] = {}
        self._lexical: dict[str, LexicalIndex] = {}
        self._lexical_dirty: set[str] = set()  # saving merges and rewrites the files: skip it when unchanged
        self._locks: dict[str, threading.RLock] = {}  # one writer per collection
        self._readers: dict[str, ReadWriteLock] = {}  # searches (read) vs applying a batch in memory (write)
        self._last_save: dict[str, float] = {}
        self._guard = threading.RLock()
        self._batcher: BatchedEmbedder | None = None
        self._committers: dict[str, GroupCommit[PreparedBatch]] = {}  # concurrent small writes, grouped
        self._write_logs: dict[str, WriteLog] = {}  # which documents recent commits wrote

    @classmethod
    def open(cls, data_dir: Path, *, embedder: Embedder | None = None, **options: Any) -> VectorStore:
        return cls(Path(data_dir), embedder=embedder, **options)

    @property
    def embedder(self) -> Embedder:
        with self._guard:
            if self._embedder is None:
                self._embedder = self._embedder_factory()
            return self._embedder

    def load_indexes(self) -> None:
        """Open (and replay or rebuild) every collection's index, so the first search is not slow. A collection
        placed on Ray in a process that joined no cluster is left closed: it answers 503 saying what to set,
        and the others serve."""
        for record in self.catalog.list_collections():
            if record.index.placement.mode == "ray" and self.cluster is None:
                logger.warning("collection %r is placed on ray but RAGSVC_CLUSTER__ADDRESS is unset: it answers 503 "
                               "until the server joins a cluster", record.name)
                continue
            self._index(record.name)

    def close(self) -> None:
        with self._guard:
            for name in list(self._indexes):
                with self._lock(name), self._rw(name).write():
                    self._indexes[name].save()
                    self._indexes[name].close()
            for name in list(self._lexical):
                with self._lock(name), self._rw(name).write():
                    self._save_lexical(name)
            self._indexes.clear()
            self._lexical.clear()
            self.catalog.close()

    def flush(self) -> None:
        """Save every open index now (they are otherwise saved every `save_interval_s` and on close)."""
        for name, index in list(self._indexes.items()):
            with self._lock(name):
                self._save(name, index)

    # -- collections ---------------------------------------------------------------------------------------

    def create_collection(self, name: str, *, index: IndexSpec | None = None, chunk_tokens: int = 200,
                          chunk_overlap: int = 32) -> CollectionInfo:
        if not is_collection_name(name):
            raise InvalidInput(f"collection name {name!r} is invalid: use 1-64 letters, digits, _ . - "
                               "starting with a letter or digit")
        check_placement(index or IndexSpec(), self.cluster)  # a ray placement needs a cluster to run on
        max_tokens = getattr(self.embedder, "max_seq_length", None)
        if max_tokens and chunk_tokens > max_tokens - 2:
            raise InvalidInput(f"chunk_tokens {chunk_tokens} exceeds what the embedder reads ({max_tokens - 2})")
        if not 0 <= chunk_overlap < chunk_tokens:
            raise InvalidInput(f"chunk_overlap must be in [0, chunk_tokens), got {chunk_overlap}")
        spec = index or IndexSpec()
        check_spec(spec, dim=self.embedder.dim, limits=self.index_limits)  # bounds first: nothing is written
        record = CollectionRecord(name, self.embedder.id, self.embedder.dim, spec, chunk_tokens, chunk_overlap)
        self.catalog.create_collection(record)  # raises CollectionExists before anything is touched
        shutil.rmtree(self._index_dir(name), ignore_errors=True)  # leftovers of an older collection of that name
        return self.get_collection(name)

    def get_collection(self, name: str) -> CollectionInfo:
        record = self.catalog.get_collection(name)
        return _info(record, *self.catalog.collection_counts(name))

    def list_collections(self) -> list[CollectionInfo]:
        return [_info(r, *self.catalog.collection_counts(r.name)) for r in self.catalog.list_collections()]

    def index_bytes(self, name: str) -> int:
        """Bytes the collection's index holds in memory to answer a query (opens the index if needed)."""
        index = self._index(name)
        with self._rw(name).read():
            return int(index.index_bytes)

    def delete_collection(self, name: str) -> None:
        with self._lock(name), self._rw(name).write():
            self.catalog.delete_collection(name)
            self._write_log(name).forget()
            index = self._indexes.pop(name, None)
            if index is not None:
                index.close()
            self._lexical.pop(name, None)
            self._lexical_dirty.discard(name)
            shutil.rmtree(self._index_dir(name), ignore_errors=True)

    # -- documents -----------------------------------------------------------------------------------------

    def add_documents(self, name: str, docs: Sequence[DocumentInput], *, progress: bool = False) -> list[str]:
        """Chunk, embed and store `docs` in one transaction; unchanged documents are skipped. Returns ids.

        `prepare_documents` then `commit`: concurrent small requests to one collection share a transaction, and
        the writer is announced to the collection's committer while it prepares, so a group committing meanwhile
        may wait for its batch (group_commit.py)."""
        self.catalog.get_collection(name)  # a missing collection is refused before it is given a committer
        with self._committer(name).writing() as submit:
            return self.commit(self.prepare_documents(name, docs, progress=progress), submit=submit)

    def prepare_documents(self, name: str, docs: Sequence[DocumentInput], *, progress: bool = False,
                          embed: EmbedTexts | None = None) -> PreparedBatch:
        """The first half of a write: validate, skip documents whose content hash is already stored, chunk, and
        embed the chunk texts the embedding cache does not hold. Takes no collection lock and writes nothing, so
        it runs while other batches commit and searches run; a bulk load prepares batch n+1 while batch n
        commits. `embed` replaces the store's embedder for the new chunk texts (a pool of worker processes, say).
        Raises InvalidInput for a bad batch before any work."""
        record = self.catalog.get_collection(name)
        self._check_embedder(record)
        ids = validate_batch(docs)
        check_metadata(docs, self.write_limits)
        generation = self._write_log(name).generation()  # before the read it vouches for
        existing = self.catalog.document_hashes(name, ids)
        digests = [content_hash(d) for d in docs]
        todo = [(i, h, d) for i, h, d in zip(ids, digests, docs, strict=True) if existing.get(i) != h]
        if not todo:
            return PreparedBatch(name, record, tuple(ids), ())
        split = split_documents(todo, embedder=self._batched(), record=record)
        check_batch(split, self.write_limits)
        texts = chunk_texts(split)
        vectors = self.catalog.cached_vectors(record.embedder_id, list(texts), record.dim)
        missing = [h for h in texts if h not in vectors]
        if missing:
            batch = [texts[h] for h in missing]
            fresh = embed(batch) if embed is not None else self._batched().embed_documents(batch, progress=progress)
            vectors.update(zip(missing, fresh, strict=True))  # fresh: (len(missing), dim)
        stored = {doc_id: existing[doc_id] for doc_id, _, _ in todo if doc_id in existing}
        return PreparedBatch(name, record, tuple(ids), tuple(assemble(split, vectors)), stored, generation)

    def commit(self, batch: PreparedBatch, *, submit: Callable[[PreparedBatch], None] | None = None) -> list[str]:
        """The second half: write a prepared batch in one transaction, then apply it to the collection's indexes.
        Returns its document ids once it is durable (acknowledged). Batches committed at the same time by other
        threads go into the same transaction (group_commit.py); each caller still gets all-or-nothing. `submit`:
        what `GroupCommit.writing` gave an announced writer (default: the collection's committer's own)."""
        if batch.documents:
            (submit or self._committer(batch.collection).submit)(batch)
        return list(batch.ids)

    def commit_group(self, batches: Sequence[PreparedBatch]) -> WriteResult:
        """Write batches of one collection in ONE transaction (all or none), in order (a later version of a
        document wins), then apply them to the indexes. What `commit` runs for a group; a bulk load calls it
        with the batches prepared while the previous group committed. Raises Conflict if the collection was
        re-created with other chunking or embedder since the batches were prepared."""
        names = {b.collection for b in batches}
        if len(names) != 1:
            raise ValueError(f"commit_group takes batches of one collection, got {sorted(names)}")
        name = names.pop()
        with self._lock(name):
            record = self.catalog.get_collection(name)
            if any(b.record != record for b in batches):
                raise Conflict(f"collection {name!r} was re-created with other settings while this batch was "
                               "prepared; send the documents again")
            # Open the index before the write: opening replays the catalog, which must not already hold this
            # batch, or the batch would be added twice.
            index = self._index(name)
            stored = self._stored_hashes(name, batches)
            docs = merge_batches(batches, stored)
            result = self.catalog.write_documents(name, docs, embedder_id=record.embedder_id,
                                                  stored_ids=[d.id for d in docs if d.id in stored])
            self._write_log(name).record(d.id for d in docs)
            self._apply(name, index, result)
            self._maybe_save(name, index)
        return result

    def _stored_hashes(self, name: str, batches: Sequence[PreparedBatch]) -> dict[str, str]:
        """The content hashes stored now for the batches' documents (call under the writer lock): what their
        prepare read, when no commit since wrote one of their ids, else read again."""
        log = self._write_log(name)
        if all(b.generation is not None and log.unchanged_since(b.generation, [d.id for d in b.documents])
               for b in batches):
            return {doc_id: digest for b in batches for doc_id, digest in b.stored_hashes.items()}
        return self.catalog.document_hashes(name, [d.id for b in batches for d in b.documents])

    def _apply(self, name: str, index: CollectionIndex | RayCollectionIndex, result: WriteResult) -> None:
        """A committed write, applied to the in-memory indexes: the only part of a write searches wait for."""
        with self._rw(name).write():
            if len(result.removed_ids):
                index.delete(result.removed_ids)
            if len(result.added_ids):
                index.add(result.added_ids, result.added_vectors)
            lexical = self._lexical.get(name)  # kept in step once open; opening replays what it missed
            if lexical is not None:
                if len(result.removed_ids):
                    lexical.delete(result.removed_ids)
                if len(result.added_ids):
                    lexical.add(result.added_ids, result.added_texts)
                self._lexical_dirty.add(name)

    def _committer(self, name: str) -> GroupCommit[PreparedBatch]:
        with self._guard:
            committer = self._committers.get(name)
            if committer is None:
                committer = self._committers[name] = GroupCommit(self.commit_group)
            return committer

    def delete_document(self, name: str, document_id: str) -> None:
        with self._lock(name):
            index = self._index(name)
            removed = self.catalog.delete_document(name, document_id)
            self._write_log(name).record([document_id])
            if len(removed):
                with self._rw(name).write():
                    index.delete(removed)
                    if name in self._lexical:
                        self._lexical[name].delete(removed)
                        self._lexical_dirty.add(name)
            self._maybe_save(name, index)

    def get_document(self, name: str, document_id: str) -> dict[str, Any]:
        return self.catalog.get_document(name, document_id)

    def list_documents(self, name: str, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        return self.catalog.list_documents(name, limit=limit, offset=offset)

    def document_hashes(self, name: str) -> dict[str, str]:
        self.catalog.get_collection(name)
        return self.catalog.document_hashes(name)

    # -- search --------------------------------------------------------------------------------------------

    def search(self, name: str, *, query: str | None = None, vector: np.ndarray | Sequence[float] | None = None,
               k: int = 10, filter: dict[str, Any] | None = None, dims: int | None = None,
               shortlist: int | None = None, ef_search: int | None = None, deadline_ms: float | None = None,
               allow_partial: bool = False) -> SearchResult:
        """Top-k hits. `deadline_ms` and `allow_partial` apply to a collection placed on Ray (the shards' time to
        answer; whether a shard with no replica left gives a partial answer instead of NotReady)."""
        started = time.perf_counter()
        record = self.catalog.get_collection(name)
        if (query is None) == (vector is None):
            raise InvalidInput("give exactly one of `query` (text) or `vector`")
        if k < 1:
            raise InvalidInput(f"k must be at least 1, got {k}")
        check_override("ef_search", ef_search, self.index_limits.max_ef_search)
        check_override("shortlist", shortlist, self.index_limits.max_shortlist)
        if deadline_ms is not None:
            check_deadline_ms(deadline_ms)
        timings: dict[str, float] = {}
        q = self._query_vector(record, query, vector, timings)
        allowed = self._allowed(name, filter, timings)
        if allowed is not None and len(allowed) == 0:
            return SearchResult([], {**timings, "total_ms": _ms(started)}, ServedBy.empty_filter())
        index = self._index(name)
        with self._rw(name).read():
            if self._indexes.get(name) is not index:  # the collection was deleted meanwhile
                raise CollectionNotFound(f"collection {name!r} was deleted while this search ran")
            if isinstance(index, RayCollectionIndex):
                found = index.search(q, k, allowed_ids=allowed, dims=dims, ef_search=ef_search,
                                     deadline_ms=deadline_ms, allow_partial=allow_partial)
            else:
                found = index.search(q, k, allowed_ids=allowed, dims=dims, shortlist=shortlist, ef_search=ef_search)
        timings.update(found.timings_ms)
        hits = self._hydrate(found.ids, found.scores, timings)
        timings["total_ms"] = _ms(started)
        return SearchResult(hits, timings, found.served_by)

    def lexical_search(self, name: str, *, query: str, k: int = 10,
                       filter: dict[str, Any] | None = None) -> SearchResult:
        """BM25 over the collection's chunks (exact; reads its own writes). Scores are BM25, not cosine."""
        started = time.perf_counter()
        self.catalog.get_collection(name)
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("query is empty; send some text")
        if k < 1:
            raise InvalidInput(f"k must be at least 1, got {k}")
        timings: dict[str, float] = {}
        allowed = self._allowed(name, filter, timings)
        if allowed is not None and len(allowed) == 0:
            return SearchResult([], {**timings, "total_ms": _ms(started)}, ServedBy.empty_filter())
        lexical = self._lexical_index(name)
        with self._rw(name).read():
            t = time.perf_counter()
            found = lexical.search(query, k, allowed_ids=allowed)
            timings["lexical_ms"] = _ms(t)
        hits = self._hydrate(found.ids, found.scores, timings)
        timings["total_ms"] = _ms(started)
        return SearchResult(hits, timings, ServedBy.lexical())

    def _allowed(self, name: str, filter: dict[str, Any] | None, timings: dict[str, float]) -> np.ndarray | None:
        """The chunk ids a metadata filter lets through (None: no filter)."""
        if not filter:
            return None
        t = time.perf_counter()
        allowed = self.catalog.filter_chunk_ids(name, filter, limits=self.filter_limits)
        timings["filter_ms"] = _ms(t)
        return allowed

    def _hydrate(self, ids: np.ndarray, scores: np.ndarray, timings: dict[str, float]) -> list[Hit]:
        t = time.perf_counter()
        rows = self.catalog.hydrate([int(i) for i in ids])
        hits = [Hit(ChunkId(int(i)), DocumentId(rows[int(i)][0]), rows[int(i)][1], float(s), rows[int(i)][2])
                for i, s in zip(ids, scores, strict=True) if int(i) in rows]  # deleted before a crash
        timings["hydrate_ms"] = _ms(t)
        return hits

    def _query_vector(self, record: CollectionRecord, query: str | None, vector: np.ndarray | Sequence[float] | None,
                      timings: dict[str, float]) -> np.ndarray:
        if query is not None:
            if not query.strip():
                raise InvalidInput("query is empty; send some text or a vector")
            self._check_embedder(record)
            t = time.perf_counter()
            q = self._batched().embed_query(query)
            timings["embed_ms"] = _ms(t)
            return q
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if q.shape[0] != record.dim:
            raise DimensionMismatch(f"vector has {q.shape[0]} dimensions; collection {record.name!r} has {record.dim}")
        if not np.all(np.isfinite(q)):
            raise InvalidInput("vector contains NaN or infinity; send finite numbers")
        if record.index.metric == "cosine":
            try:
                q = unit_vector(q)
            except NotNormalisable:
                raise InvalidInput("vector is all zeros; cosine similarity needs a non-zero vector") from None
        return q

    # -- internals -----------------------------------------------------------------------------------------

    def _check_embedder(self, record: CollectionRecord) -> None:
        if record.embedder_id != self.embedder.id:
            raise InvalidInput(
                f"collection {record.name!r} was built with embedder {record.embedder_id!r} but this server runs "
                f"{self.embedder.id!r}; search it by vector, or start the server with that embedder")

    def _lock(self, name: str) -> threading.RLock:
        """The collection's writer lock: one ingest, delete or save at a time; searches never take it."""
        with self._guard:
            return self._locks.setdefault(name, threading.RLock())

    def shared_embedder(self) -> Embedder:
        """The store's embedder behind its batching and model lock, for other stages of a request (HyDE's
        passages): their forward passes then queue with the store's own searches and ingests instead of
        racing them for the model and its tokenizer."""
        return self._batched()

    def _batched(self) -> BatchedEmbedder:
        """The embedder with concurrent searches' and small ingests' texts batched into shared forward passes
        (embed_batcher.py): under load, the model is what searches queue for."""
        with self._guard:
            if self._batcher is None:
                replicas = [self._embedder_factory() for _ in range(self._embed_lanes - 1)]
                self._batcher = BatchedEmbedder(self.embedder, replicas=replicas)
            return self._batcher

    def _write_log(self, name: str) -> WriteLog:
        with self._guard:
            return self._write_logs.setdefault(name, WriteLog())

    def _rw(self, name: str) -> ReadWriteLock:
        with self._guard:
            return self._readers.setdefault(name, ReadWriteLock())

    def _index_dir(self, name: str) -> Path:
        return self.data_dir / "indexes" / name

    def _index(self, name: str) -> CollectionIndex | RayCollectionIndex:
        index = self._indexes.get(name)  # open already (the hot path): no lock
        if index is not None:
            return index
        with self._lock(name):
            index = self._indexes.get(name)
            if index is None:
                record = self.catalog.get_collection(name)
                index = open_collection_index(self._index_dir(name), record.index, record.dim,
                                              self.catalog.vector_source(name), cluster=self.cluster)
                self._indexes[name] = index
                self._last_save[name] = time.monotonic()
            return index

    def _maybe_save(self, name: str, index: CollectionIndex | RayCollectionIndex) -> None:
        """The periodic save after a commit. The write it follows is durable in the catalog already, so a save
        that fails (a full disk) is logged, not raised: the indexes are derived, each file is replaced whole or
        not at all, and opening them replays what they miss from the catalog (or rebuilds one that fails to
        load). The next save is tried an interval on."""
        if time.monotonic() - self._last_save.get(name, 0.0) < self._save_interval_s:
            return
        try:
            self._save(name, index)
        except OSError as err:
            self._last_save[name] = time.monotonic()
            logger.warning("collection %r: saving its indexes failed (%s); the write itself is committed, the "
                           "index files on disk are the last complete save and catch up when reopened. Retrying "
                           "in %.0f s", name, err, self._save_interval_s)

    def _save(self, name: str, index: CollectionIndex | RayCollectionIndex) -> None:
        index.save()  # reads the structures searches read: under the writer lock only, searches go on
        if name in self._lexical_dirty:
            with self._rw(name).write():  # saving BM25 merges its segments in place
                self._save_lexical(name)
        self._last_save[name] = time.monotonic()

    def _save_lexical(self, name: str) -> None:
        lexical = self._lexical.get(name)
        if lexical is not None and name in self._lexical_dirty:
            lexical.save(self._lexical_dir(name))
            self._lexical_dirty.discard(name)

    def _lexical_dir(self, name: str) -> Path:
        return self._index_dir(name) / "lexical"

    def _lexical_index(self, name: str) -> LexicalIndex:
        """The collection's BM25 index, opened (loaded and caught up, or built) on first use."""
        lexical = self._lexical.get(name)
        if lexical is not None:
            return lexical
        with self._lock(name):
            lexical = self._lexical.get(name)
            if lexical is None:
                self._index(name)  # the ANN index first: its open must not see a half-applied batch either
                lexical = open_lexical(self._lexical_dir(name), self.catalog.vector_source(name))
                self._lexical[name] = lexical
                self._lexical_dirty.add(name)  # a first open may have built or caught up: save that work
            return lexical


def _info(record: CollectionRecord, num_documents: int, num_chunks: int) -> CollectionInfo:
    settings = {f.name: getattr(record, f.name) for f in fields(CollectionRecord)}
    return CollectionInfo(**settings, num_documents=num_documents, num_chunks=num_chunks)


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 3)
