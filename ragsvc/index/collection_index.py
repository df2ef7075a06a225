"""CollectionIndex: the one object the store uses per collection: ANN shards + rotation + rescoring vectors.

Public API (what ragsvc.retrieval.vector_store calls; unchanged from the design brief):

    idx = CollectionIndex.open(directory, spec, dim, source)   # load + replay above watermark, or rebuild
    idx.add(ids int64 (n,), vectors float32 (n, dim))            # full width, already normalised for cosine
    idx.delete(ids)
    result = idx.search(query (dim,), k, *, allowed_ids=None, dims=None, shortlist=None, ef_search=None)
    result.ids, result.scores, result.timings_ms, result.served_by  # IndexResult (results.py)
    idx.save(); idx.index_bytes; len(idx); idx.close()
    CollectionIndex.from_arrays(vectors, spec=..., ids=None, directory=None)  # no store (benchmarks)

Scores: higher is better (inner product / cosine; negative squared L2 distance for `l2`).
Not thread-safe for writes: the caller serialises add/delete/save (VectorStore holds a per-collection lock).
IndexSpec fields added by the index layer: `prefix_quant` (faiss scalar quantisation of the indexed prefix)
and `rescore_tail_only` (see below); both default to off, so stored specs without them still load.

Memory (bytes a vector, 384-d MiniLM, measured by `index_bytes`): raw hnswlib M=16 is ~1,690 (float32 vector
1,536 + level-0 links 132 + label 8 + upper levels). Layouts within a third of it: faiss_hnsw + prefix_quant
"sq8" at full width (no dims): 536 (codes 384 + graph ~144 + id map 8); or the adaptive faiss_hnsw + "sq8" +
rescore_tail_only, d' = 96, hnsw_m = 12: ~517 (prefix codes 96 + graph ~120 + id map 8 + int8 tail 288 + 4
scale + 8 id + 1 alive) plus the 590 KB rotation. On 11.9k real MiniLM vectors (bench corpus pieces, 400
held-out queries, one thread) the full-width sq8 graph gave recall@10 0.967 at 0.83x raw hnswlib's QPS at
ef 24 (0.9745), and the d' = 96 tail layout 0.954 at 0.47x: on this corpus the quantised full-width graph
beats the Matryoshka shortlist; both are configurations, the benchmark decides.

How a search is served (`served_by`, a ServedBy, records the path and renders as the names below):
- **untrained**: until MIN_TRAIN vectors exist, a spec that needs training (Matryoshka dims, IVF/PQ) keeps
  full-width vectors in an ExactShard and scans them exactly. At MIN_TRAIN (or, when built from the store, on
  up to TRAIN_SAMPLE_MAX vectors) the PCA rotation, SQ ranges and IVF centroids are fitted and the shards
  built. Trained specs rebuild from the store each time the collection grows RETRAIN_GROWTH-fold past their
  training sample (1k -> 8k -> 64k, then never: TRAIN_SAMPLE_MAX), since IVF lists or SQ ranges fitted on
  1k vectors fit 100k badly. That rebuild runs inside the `add` that crosses the line (seconds at 64k).
- **exact-subset**: a filter allowing few ids (<= EXACT_SUBSET_MAX or EXACT_SUBSET_FRACTION of the
  collection) is scanned exactly over just those ids: faster than steering a graph through a sparse filter.
- **ANN (+rescore)**: shards search the first d' = spec.dims rotated dimensions (filters applied inside the
  library), then the shortlist of L candidates is rescored at full width with the rescoring vectors (with
  `rescore_tail_only`, the prefix part of each score is the ANN's own and only dims d'.. are rescored).
- **exact-prefix**: a query-time `dims` different from the built d' scans that prefix of the rescoring
  vectors exactly, then rescores the shortlist at full width.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from ragsvc.errors import DimensionMismatch, InvalidInput
from ragsvc.index.collection_files import load_state, remove_stale, save_state
from ragsvc.index.collection_state import CollectionState, empty_state, train_state
from ragsvc.index.factory import needs_training
from ragsvc.index.memory_source import InMemoryVectorSource
from ragsvc.index.results import IndexResult
from ragsvc.index.shard import PAD_ID, as_ids, check_add, top_k_row
from ragsvc.index.source import VectorSource
from ragsvc.index.spec import IndexSpec
from ragsvc.types import ServedBy

logger = logging.getLogger(__name__)

MIN_TRAIN = 1024
TRAIN_SAMPLE_MAX = 50_000
RETRAIN_GROWTH = 8
EXACT_SUBSET_MAX = 2048
EXACT_SUBSET_FRACTION = 0.02
_SERVED_CACHE_MAX = 256


class CollectionIndex:
    def __init__(self, directory: Path | None, spec: IndexSpec, dim: int, source: VectorSource) -> None:
        if spec.dims is not None and spec.dims > dim:
            raise InvalidInput(f"index dims {spec.dims} exceed the vectors' width {dim}; use at most {dim}")
        if spec.backend == "faiss_ivfpq" and (spec.dims or dim) % spec.pq_m:
            raise InvalidInput(f"pq_m {spec.pq_m} must divide the indexed width {spec.dims or dim}")
        self.directory = None if directory is None else Path(directory)
        self.spec, self.dim, self.source = spec, dim, source
        self.width = spec.dims or dim
        self._state: CollectionState = empty_state(spec, dim)
        self._train_target = MIN_TRAIN
        self._dirty = True  # whether memory differs from the saved files
        self._served_ann: dict[int, ServedBy] = {}
        """ANN-path ServedBy by shortlist (0: no rescoring). Built once each: a frozen ten-field dataclass costs
        ~5 us to construct, a sixth of an hnswlib query, and the index shape it records never changes."""

    # -- lifecycle -----------------------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path | None, spec: IndexSpec, dim: int, source: VectorSource) -> CollectionIndex:
        index = cls(directory, spec, dim, source)
        state = None
        if index.directory is not None:
            index.directory.mkdir(parents=True, exist_ok=True)
            state = load_state(index.directory, spec, dim)
        if state is None:
            index._rebuild()
        else:
            index._state = state
            index._dirty = False
            index._replay()
        return index

    @classmethod
    def from_arrays(cls, vectors: np.ndarray, *, spec: IndexSpec, ids: np.ndarray | None = None,
                    directory: Path | None = None) -> CollectionIndex:
        """Build from in-memory vectors (n, dim) with no store: ids default to 1..n. For benchmarks and tests."""
        source = InMemoryVectorSource(vectors, ids=ids)
        return cls.open(directory, spec, source.dim, source)

    def save(self) -> None:
        """Write every file under a new generation, then the manifest (the commit point), then drop old ones."""
        if self.directory is None:
            raise InvalidInput("this index was opened without a directory; open it with one to save")
        if not self._dirty:
            return  # nothing changed since the files were written or loaded
        self._state.generation += 1
        save_state(self.directory, self._state, self.spec, self.dim)
        remove_stale(self.directory, self._state.generation)
        self._dirty = False

    def close(self) -> None:
        if self._state.ann is not None:
            self._state.ann.close()

    def __len__(self) -> int:
        return self._state.count

    @property
    def index_bytes(self) -> int:
        """Every byte held in memory to answer a query: ANN structure, rescoring vectors, rotation, staging."""
        return self._state.nbytes

    @property
    def watermark(self) -> int:
        return self._state.watermark

    @property
    def trained(self) -> bool:
        return self._state.staging is None

    # -- writes --------------------------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = check_add(ids, vectors, self.dim)
        if not len(ids):
            return
        self._dirty = True
        state = self._state
        if state.staging is not None:
            state.staging.add(ids, vectors)
            state.watermark = max(state.watermark, int(ids.max()))
            if len(state.staging) >= self._train_target:
                self._train()
            return
        state.add_trained(ids, vectors)
        if self._should_retrain():
            logger.info("collection grew %d-fold past its training sample; retraining from the store", RETRAIN_GROWTH)
            self._rebuild()

    def delete(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids):
            self._state.delete(ids)
            self._dirty = True

    # -- search --------------------------------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None, dims: int | None = None,
               shortlist: int | None = None, ef_search: int | None = None) -> IndexResult:
        """Top-k ids (<=k,) and scores (<=k,), with timings_ms and served_by, for one query vector (dim,).

        `ef_search` overrides the spec's graph search breadth for this query (hnsw / faiss_hnsw backends).
        """
        q = self._check_query(query, k, dims, shortlist)
        if ef_search is not None and ef_search < 1:
            raise InvalidInput(f"ef_search must be at least 1, got {ef_search}")
        allowed = as_ids(allowed_ids)
        timings: dict[str, float] = {}
        state = self._state
        if state.staging is not None:
            started = time.perf_counter()
            hits = state.staging.search(q[None, :], k, allowed_ids=allowed)  # (1, k)
            timings["exact_ms"] = _ms(started)
            served = ServedBy.untrained(num_ids=len(state.staging), train_at=self._train_target)
            return IndexResult(*_strip(hits.ids[0], hits.scores[0]), timings, served)
        started = time.perf_counter()
        qr = state.rotation.apply(q) if state.rotation is not None else q  # (dim,)
        timings["rotate_ms"] = _ms(started)
        if allowed is not None and len(allowed) <= max(EXACT_SUBSET_MAX, EXACT_SUBSET_FRACTION * len(self)):
            return self._search_subset(qr, k, allowed, timings)
        if dims is not None and dims != self.width:
            return self._search_prefix(qr, k, dims, shortlist or self.spec.shortlist, allowed, timings)
        return self._search_ann(qr, k, shortlist or self.spec.shortlist, allowed, timings, ef_search)

    def _search_ann(self, qr: np.ndarray, k: int, shortlist: int, allowed: np.ndarray | None,
                    timings: dict[str, float], ef_search: int | None = None) -> IndexResult:
        state = self._state
        assert state.ann is not None
        rescore = state.rescorer is not None
        fetch = max(k, shortlist) if rescore else k
        started = time.perf_counter()
        hits = state.ann.search(qr[None, : self.width], fetch, allowed_ids=allowed, ef_search=ef_search)  # (1, fetch)
        timings["ann_ms"] = _ms(started)
        ids, scores = hits.ids[0], hits.scores[0]  # (fetch,)
        if not rescore:
            return IndexResult(*_strip(ids[:k], scores[:k]), timings, self._served_by_ann(0))
        keep = ids != PAD_ID
        out = self._rescore(qr, ids[keep], scores[keep], k, timings)
        return IndexResult(*out, timings, self._served_by_ann(fetch))

    def _served_by_ann(self, shortlist: int) -> ServedBy:
        served = self._served_ann.get(shortlist)
        if served is None:
            if len(self._served_ann) >= _SERVED_CACHE_MAX:  # callers choosing ever new shortlists: stay bounded
                self._served_ann.clear()
            rescored = shortlist > 0
            served = self._served_ann[shortlist] = ServedBy.ann(
                backend=self.spec.backend, num_shards=self.spec.num_shards, dims=self.width,
                shortlist=shortlist if rescored else None, rescore_dtype=self.spec.rescore_dtype if rescored else None,
                tail_only=rescored and self.spec.rescore_tail_only)
        return served

    def _search_prefix(self, qr: np.ndarray, k: int, dims: int, shortlist: int, allowed: np.ndarray | None,
                       timings: dict[str, float]) -> IndexResult:
        rescorer = self._state.rescorer
        if rescorer is None or self.spec.rescore_tail_only:
            kept = "keeps no rescoring vectors" if rescorer is None else "keeps only dims >= d' for rescoring"
            raise InvalidInput(f"this collection {kept}, so a dims={dims} override cannot be served; omit dims, "
                               "or recreate the collection with index dims set and rescore_tail_only false")
        started = time.perf_counter()
        rows = None if allowed is None else rescorer.rows_for(allowed)[1]
        fetch = max(k, shortlist)
        ids = rescorer.scan(qr, fetch, width=dims, rows=rows).ids[0]  # (fetch,)
        timings["prefix_scan_ms"] = _ms(started)
        ids = ids[ids != PAD_ID]
        out = self._rescore(qr, ids, np.zeros(len(ids), np.float32), k, timings)
        served = ServedBy.exact_prefix(dims=dims, shortlist=fetch, rescore_dtype=self.spec.rescore_dtype)
        return IndexResult(*out, timings, served)

    def _search_subset(self, qr: np.ndarray, k: int, allowed: np.ndarray,
                       timings: dict[str, float]) -> IndexResult:
        started = time.perf_counter()
        state = self._state
        if state.rescorer is None:
            found, scores = state.exact_subset(qr, allowed)
            out = top_k_row(scores, found, k)
            served = ServedBy.exact_subset(num_ids=len(allowed))
        else:
            if state.rescore_offset:  # prefix part from the shards' own vectors, the rest from the rescorer
                found, prefix_scores = state.exact_subset(qr[: self.width], allowed)
                out = self._rescore(qr, found, prefix_scores, k, timings)
            else:
                out = self._rescore(qr, allowed, np.zeros(len(allowed), np.float32), k, timings)
            served = ServedBy.exact_subset(num_ids=len(allowed), rescore_dtype=self.spec.rescore_dtype,
                                           tail_only=bool(state.rescore_offset))
        timings["exact_subset_ms"] = _ms(started)
        return IndexResult(*out, timings, served)

    def _rescore(self, qr: np.ndarray, candidates: np.ndarray, prefix_scores: np.ndarray, k: int,
                 timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of candidates (m,) by full-width score: the rescorer's part plus, in tail-only mode, the ANN's."""
        state = self._state
        rescorer = state.rescorer
        assert rescorer is not None
        started = time.perf_counter()
        ok, rows = rescorer.lookup(candidates)
        scores = rescorer.scores(qr[state.rescore_offset :], rows[ok])  # (m,)
        if state.rescore_offset:
            scores = scores + prefix_scores[ok]
        out = top_k_row(scores, candidates[ok], k)
        timings["rescore_ms"] = _ms(started)
        return out

    def _check_query(self, query: np.ndarray, k: int, dims: int | None, shortlist: int | None) -> np.ndarray:
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise DimensionMismatch(f"query has {q.shape[0]} dimensions; this collection holds {self.dim}")
        if not math.isfinite(float(q @ q)):  # one C call: NaN or inf anywhere makes the square norm non-finite
            raise InvalidInput("query contains NaN or infinity (or values too large to square); send finite numbers")
        if k < 1:
            raise InvalidInput(f"k must be at least 1, got {k}")
        if dims is not None and not 1 <= dims <= self.dim:
            raise InvalidInput(f"dims must be between 1 and {self.dim}, got {dims}")
        if shortlist is not None and shortlist < 1:
            raise InvalidInput(f"shortlist must be at least 1, got {shortlist}")
        return q

    # -- building ------------------------------------------------------------------------------------------

    def _train(self) -> None:
        staging = self._state.staging
        assert staging is not None
        started = time.perf_counter()
        self._state = train_state(self.spec, self.dim, staging.ids, staging.vectors, watermark=self._state.watermark,
                                  generation=self._state.generation)
        logger.info("trained %s index on %d vectors in %.1f s", self.spec.backend, len(staging),
                    time.perf_counter() - started)

    def _rebuild(self) -> None:
        """Build from the store: train on the first TRAIN_SAMPLE_MAX (or all) vectors, then stream the rest."""
        total = self.source.count()
        generation = self._state.generation
        if self._state.ann is not None:
            self._state.ann.close()
        self._state = empty_state(self.spec, self.dim)
        self._state.generation = generation
        self._train_target = min(max(total, MIN_TRAIN), TRAIN_SAMPLE_MAX) if needs_training(self.spec) else 0
        for ids, vectors in self.source.iter_vectors(after_id=0):
            self.add(ids, vectors)
        self._train_target = MIN_TRAIN
        logger.info("built %s index over %d vectors from the store", self.spec.backend, len(self))

    def _replay(self) -> None:
        """Add what the store acknowledged after the last save; drop what it deleted meanwhile."""
        replayed = 0
        for ids, vectors in self.source.iter_vectors(after_id=self._state.watermark):
            self.add(ids, vectors)
            replayed += len(ids)
        if replayed:
            logger.info("replayed %d chunks above watermark into the index", replayed)
        if len(self) > self.source.count():  # a delete committed after the last save: find it by id
            live = np.concatenate([ids for ids, _ in self.source.iter_vectors(after_id=0)] or [np.zeros(0, np.int64)])
            stale = np.setdiff1d(self._state.all_ids(), live)
            logger.info("dropping %d chunks deleted from the store after the last save", len(stale))
            self.delete(stale)

    def _should_retrain(self) -> bool:
        """Whether the collection outgrew what the rotation / SQ ranges / IVF lists were fitted on."""
        state = self._state
        return (state.trained_on > 0 and state.trained_on < TRAIN_SAMPLE_MAX
                and len(self) >= RETRAIN_GROWTH * state.trained_on and self.source.count() >= len(self))


def _strip(ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not len(ids) or ids[-1] != PAD_ID:  # padding only ever trails
        return ids.astype(np.int64, copy=False), scores.astype(np.float32, copy=False)
    keep = ids != PAD_ID
    return ids[keep].astype(np.int64), scores[keep].astype(np.float32)


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


__all__ = ["CollectionIndex"]
