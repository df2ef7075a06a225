"""FaissShard: one faiss index (Flat, IVF-Flat, IVF-PQ or HNSW; optionally scalar-quantised), CPU or GPU.

Ids: IVF indexes store chunk ids natively; Flat and HNSW are wrapped in IndexIDMap (8 bytes per vector).
Deletes: Flat and IVF remove for real; faiss's HNSW cannot remove, so deleted ids become tombstones that an
IDSelector hides during the search (recorded in the manifest, since the faiss file cannot hold them).
Re-adding a deleted or existing id to an HNSW shard is refused: rebuild instead (chunk ids are never reused).
Copies: an HNSW shard stores each distinct code once and answers its copies beside it (`twins.py`; copies
in a graph trap its searches); a deleted representative with copies left stays in the graph, hidden.
Training: IVF centroids, PQ codebooks and SQ ranges are trained once, on the sample the CollectionIndex
passes to `create` (it keeps vectors exact until it has enough; see collection_index.py).
GPU: when `use_gpu` is set, faiss has GPU support and sees a GPU, Flat / IVF / IVF-PQ shards are cloned to
GPU 0 (HNSW has no GPU version in faiss and stays on the CPU). Files are always written from a CPU copy.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from ragsvc.errors import IndexCorrupt, InvalidInput
from ragsvc.index.atomic import atomic_write
from ragsvc.index.manifest import ShardMeta
from ragsvc.index.results import ShardHits
from ragsvc.index.shard import PAD_ID, ShardMetric, as_ids, check_add, check_queries, exact_scores, pad, top_k
from ragsvc.index.spec import IndexSpec
from ragsvc.index.sq8_graph_search import Sq8GraphSearcher
from ragsvc.index.twins import Twins, expand_hits

Device = Literal["cpu", "gpu"]
GPU_BACKENDS = ("faiss_flat", "faiss_ivf", "faiss_ivfpq")
_QUANT = {"sq8": "QT_8bit", "sq6": "QT_6bit", "sq4": "QT_4bit", "fp16": "QT_fp16"}


def faiss_needs_training(spec: IndexSpec) -> bool:
    if spec.backend in ("faiss_ivf", "faiss_ivfpq"):
        return True
    return spec.backend in ("faiss_flat", "faiss_hnsw") and spec.prefix_quant != "none"


def choose_device(*, use_gpu: bool, backend: str, num_gpus: int, has_gpu_api: bool) -> Device:
    """GPU only when asked for, possible for this structure, and present; otherwise the same API on CPU."""
    return "gpu" if use_gpu and backend in GPU_BACKENDS and num_gpus > 0 and has_gpu_api else "cpu"


def auto_nlist(num_train: int) -> int:
    """About 4·sqrt(n) lists, but never fewer than 39 training points per list (faiss's own minimum)."""
    return max(1, min(int(4 * math.sqrt(num_train)), num_train // 39))


def _faiss_metric(metric: ShardMetric) -> int:
    return faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2


def _build_cpu(spec: IndexSpec, dim: int, metric: ShardMetric, num_train: int) -> faiss.Index:
    fm = _faiss_metric(metric)
    quant = getattr(faiss.ScalarQuantizer, _QUANT[spec.prefix_quant]) if spec.prefix_quant != "none" else None
    if spec.backend in ("faiss_ivf", "faiss_ivfpq"):
        nlist = spec.ivf_nlist or auto_nlist(num_train)
        # Any: faiss's stubs leave out SWIG's `.this`, used below to hand ownership to the IVF index
        coarse: Any = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
        index: faiss.IndexIVF
        if spec.backend == "faiss_ivfpq":
            index = faiss.IndexIVFPQ(coarse, dim, nlist, spec.pq_m, 8, fm)
        elif quant is not None:
            index = faiss.IndexIVFScalarQuantizer(coarse, dim, nlist, quant, fm)
        else:
            index = faiss.IndexIVFFlat(coarse, dim, nlist, fm)
        index.own_fields = True
        coarse.this.disown()  # the IVF index owns and frees its coarse quantiser
        return index
    inner: faiss.Index
    if spec.backend == "faiss_hnsw":
        hnsw = faiss.IndexHNSWSQ(dim, quant, spec.hnsw_m, fm) if quant is not None else \
            faiss.IndexHNSWFlat(dim, spec.hnsw_m, fm)
        hnsw.hnsw.efConstruction = spec.ef_construction
        inner = hnsw
    elif quant is not None:
        inner = faiss.IndexScalarQuantizer(dim, quant, fm)
    else:
        inner = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
    return faiss.IndexIDMap(inner)


class FaissShard:
    def __init__(self, index: Any, *, spec: IndexSpec, dim: int, device: Device = "cpu",
                 tombstones: np.ndarray | None = None, twins: Twins | None = None) -> None:
        self._index = index
        self.spec, self.dim, self.device = spec, dim, device
        self.metric: ShardMetric = "l2" if spec.metric == "l2" else "ip"
        self._tombstones = np.zeros(0, np.int64) if tombstones is None else np.unique(tombstones.astype(np.int64))
        self._gpu_resources: Any = None
        self._ntotal = int(index.ntotal)
        self._plain_params: dict[int, Any] = {}  # ef -> reusable unfiltered SearchParameters (saves ~10 us a query)
        self._native: Sq8GraphSearcher | None = None
        self._attach_native()
        # faiss_hnsw keeps identical stored vectors (equal codes) out of its graph, as hnswlib shards do
        # (twins.py); keys are the codes, so vectors that quantise to the same codes count as copies too
        self._twins = Twins() if twins is None else twins
        self._positions: dict[int, int] | None = None  # graph label -> storage position, built on first use
        self._keys_known = twins is None

    @classmethod
    def create(cls, spec: IndexSpec, dim: int, *, train_sample: np.ndarray | None = None) -> FaissShard:
        metric: ShardMetric = "l2" if spec.metric == "l2" else "ip"
        num_train = 0 if train_sample is None else len(train_sample)
        index = _build_cpu(spec, dim, metric, num_train)
        if faiss_needs_training(spec):
            if train_sample is None or num_train < 1:
                raise ValueError(f"{spec.backend} needs a training sample; CollectionIndex passes one")
            try:
                index.train(np.ascontiguousarray(train_sample, dtype=np.float32))
            except RuntimeError as exc:
                raise InvalidInput(f"faiss could not train {spec.backend} on {num_train} vectors ({exc}); "
                                   "lower ivf_nlist or pq_m, or add more vectors") from exc
        shard = cls(index, spec=spec, dim=dim)
        shard._maybe_to_gpu()
        shard._refresh_count()
        return shard

    def __len__(self) -> int:
        return self._ntotal - len(self._tombstones) - self._twins.num_hidden + self._twins.num_twins

    def _graph_live(self) -> int:
        return self._ntotal - len(self._tombstones)

    def _refresh_count(self) -> None:
        """Read ntotal after a write: through SWIG it costs ~9 us, too much to pay on every search."""
        self._ntotal = int(self._index.ntotal)
        if self._native is not None:
            self._native.refresh()

    def _attach_native(self) -> None:
        """The native walk for an 8-bit HNSW graph on the CPU (sq8_graph_search.py), when it can be built."""
        if self.device != "cpu" or not Sq8GraphSearcher.supports(self._index):
            return
        native = Sq8GraphSearcher(self._index)
        self._native = native if native.available else None
        if self._native is not None:
            self._native.mark_dead(self._tombstones)

    @property
    def nbytes(self) -> int:
        return faiss_nbytes(self._cpu_index()) + int(self._tombstones.nbytes)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = check_add(ids, vectors, self.dim)
        if not len(ids):
            return
        if self.spec.backend == "faiss_hnsw":
            held = np.concatenate([faiss.vector_to_array(self._index.id_map), self._tombstones])
            if np.isin(ids, held).any():
                raise InvalidInput("faiss HNSW cannot replace or re-add a chunk id; rebuild the index from the store")
            self._know_keys()
            kept, _ = self._twins.place(ids, self._codes(vectors), self._stored_codes)
            row_of = {label: row for row, label in enumerate(ids.tolist())}
            rows = [row_of[label] for label in kept.tolist()]
            ids, vectors = kept, vectors[rows]
            if not len(ids):
                return
            if self._positions is not None:
                self._positions.update((label, self._ntotal + i) for i, label in enumerate(ids.tolist()))
        else:
            self._index.remove_ids(faiss.IDSelectorBatch(ids))  # insert-or-replace, like hnswlib
        try:
            self._index.add_with_ids(vectors, ids)
        except RuntimeError as exc:
            # check_add already refused malformed input, so the index itself is in a state it cannot extend
            raise IndexCorrupt(f"faiss refused the vectors ({exc}); rebuild the index from the store") from exc
        finally:
            self._refresh_count()

    def delete(self, ids: np.ndarray) -> None:
        ids = np.unique(np.asarray(ids, np.int64).reshape(-1))
        if not len(ids):
            return
        if self.spec.backend != "faiss_hnsw":
            self._index.remove_ids(faiss.IDSelectorBatch(ids))
            self._refresh_count()
            return
        ids = np.asarray(self._twins.remove(ids.tolist()), np.int64)
        held = faiss.vector_to_array(self._index.id_map)
        self._tombstones = np.union1d(self._tombstones, ids[np.isin(ids, held)])
        if self._native is not None:
            self._native.mark_dead(self._tombstones)

    def live_ids(self) -> np.ndarray:
        if self.spec.backend in ("faiss_ivf", "faiss_ivfpq"):
            invlists = faiss.extract_index_ivf(self._cpu_index()).invlists
            if invlists is None:  # an IVF index built or loaded here always owns its lists
                raise RuntimeError("faiss IVF index without inverted lists")
            parts = [faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
                     for i in range(invlists.nlist) if invlists.list_size(i)]
            ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        else:
            ids = faiss.vector_to_array(self._cpu_index().id_map)
        live = np.setdiff1d(ids.astype(np.int64), self._tombstones)
        if self._twins.num_hidden:
            live = np.setdiff1d(live, np.fromiter(self._twins.hidden, np.int64))
        return np.concatenate([live, np.asarray(self._twins.twin_labels(), np.int64)])

    def search(self, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None,
               ef_search: int | None = None) -> ShardHits:
        queries = check_queries(queries, self.dim, k)
        asked = allowed = as_ids(allowed_ids)
        twinned = bool(self._twins.num_twins or self._twins.num_hidden)
        if allowed is not None and twinned:  # the graph nodes standing for the allowed ids
            allowed = np.fromiter(self._twins.reps_for(allowed), np.int64)
        if allowed is not None and len(self._tombstones):
            allowed = np.setdiff1d(allowed, self._tombstones)
        k_avail = min(k, self._graph_live() if allowed is None else len(allowed))
        if k_avail == 0:
            return pad(np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64), k)
        ef = max(ef_search or self.spec.ef_search, k_avail)
        if self._native is not None and allowed is None and len(queries) == 1:
            hits = self._native.search(queries[0], k_avail, ef)  # (1, <= k_avail)
        else:
            hits = self._search(queries, k_avail, self._params(allowed, ef))
            if allowed is not None and (hits.ids == PAD_ID).any():
                # A sparse filter can hide the allowed ids from the probed lists or the graph walk: look wider.
                hits = self._search_wide(queries, k_avail, allowed)
        if twinned:
            return expand_hits(self._twins, hits.scores, hits.ids, k, asked)
        return pad(hits.scores, hits.ids, k)

    def _search(self, queries: np.ndarray, k: int, params: Any) -> ShardHits:
        try:
            distances, labels = self._index.search(queries, k, params=params)
        except RuntimeError as exc:
            raise IndexCorrupt(f"faiss search failed ({exc}); rebuild the index from the store") from exc
        scores = distances if self.metric == "ip" else -distances
        if (labels[:, -1] == PAD_ID).any():  # faiss pads at the end of a row; most searches have none
            scores = np.where(labels == PAD_ID, -np.inf, scores)
        return ShardHits(labels.astype(np.int64, copy=False), scores.astype(np.float32, copy=False))

    def _search_wide(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> ShardHits:
        """IVF: probe every list; HNSW: score the allowed ids' stored vectors directly. Flat is already exact."""
        if self.spec.backend in ("faiss_ivf", "faiss_ivfpq"):
            params = self._params(allowed, max(self.spec.ef_search, k))
            params.nprobe = faiss.extract_index_ivf(self._cpu_index()).nlist
            return self._search(queries, k, params)
        if self.spec.backend != "faiss_hnsw":
            return self._search(queries, k, self._params(allowed, max(self.spec.ef_search, k)))
        held = faiss.vector_to_array(self._index.id_map)
        positions = np.flatnonzero(np.isin(held, allowed))
        vectors = self._index.index.reconstruct_batch(positions) if len(positions) else np.zeros((0, self.dim))
        scores = exact_scores(queries, vectors.astype(np.float32), self.metric)  # (q, m)
        return top_k(scores, np.broadcast_to(held[positions], scores.shape), k)

    def _params(self, allowed: np.ndarray | None, ef: int) -> Any:
        """Search parameters with HNSW breadth `ef` (already >= k) and the filter / tombstone selector."""
        if allowed is None and not len(self._tombstones):
            params = self._plain_params.get(ef)
            if params is None:
                params = self._plain_params[ef] = self._new_params(None, ef)
            return params
        return self._new_params(allowed, ef)

    def _new_params(self, allowed: np.ndarray | None, ef: int) -> Any:
        selector: faiss.IDSelector | None = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(allowed)
        elif len(self._tombstones):
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(self._tombstones))
        params: Any  # set below: `_selector` is our own attribute on the SWIG object
        if self.spec.backend == "faiss_hnsw":
            params = faiss.SearchParametersHNSW(efSearch=ef)  # type: ignore[attr-defined]  # missing from faiss's stubs
        elif self.spec.backend in ("faiss_ivf", "faiss_ivfpq"):
            params = faiss.SearchParametersIVF()
            params.nprobe = self.spec.ivf_nprobe
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
            params._selector = selector  # keep the Python object alive as long as the params
        return params

    def manifest_meta(self) -> ShardMeta:
        if self.spec.backend != "faiss_hnsw":
            return ShardMeta(tombstones=tuple(self._tombstones.tolist()))
        pairs, hidden = self._twins.to_arrays()
        return ShardMeta(tombstones=tuple(self._tombstones.tolist()), twins=tuple(pairs.reshape(-1).tolist()),
                         hidden=tuple(hidden.tolist()), twins_checked=True)

    def _codes(self, vectors: np.ndarray) -> np.ndarray:
        """What the graph stores for `vectors` (raw floats, or 8-bit codes), as bytes per row."""
        hnsw: Any = faiss.downcast_index(self._cpu_index().index)  # IndexHNSW; faiss's stubs type it as Index
        storage = faiss.downcast_index(hnsw.storage)
        return storage.sa_encode(np.ascontiguousarray(vectors, dtype=np.float32))

    def _stored_codes(self, label: int) -> np.ndarray:
        """A graph node's stored codes (decoding and encoding again gives them back exactly)."""
        if self._positions is None:
            held = faiss.vector_to_array(self._cpu_index().id_map)
            self._positions = {int(label): i for i, label in enumerate(held.tolist())}
        stored = self._cpu_index().index.reconstruct_batch(np.array([self._positions[label]], np.int64))
        return self._codes(stored)[0]

    def _know_keys(self) -> int:
        """Read a loaded graph's codes into the twin keys once; return how many live nodes copy another."""
        if self._keys_known:
            return 0
        held = faiss.vector_to_array(self._cpu_index().id_map).astype(np.int64)
        live = np.flatnonzero(~np.isin(held, self._tombstones))
        copies = 0
        for start in range(0, len(live), 65_536):
            positions = live[start : start + 65_536]
            codes = self._codes(self._cpu_index().index.reconstruct_batch(positions))
            for label, first in self._twins.know(held[positions].tolist(), codes):
                copies += int(np.array_equal(self._stored_codes(label), self._stored_codes(first)))
        self._keys_known = True
        return copies

    def save(self, path: Path) -> None:
        atomic_write(path, lambda tmp: faiss.write_index(self._cpu_index(), str(tmp)))

    @classmethod
    def load(cls, path: Path, *, spec: IndexSpec, dim: int, meta: ShardMeta | None = None) -> FaissShard:
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexCorrupt(f"faiss shard {path} cannot be loaded ({exc}); it will be rebuilt") from exc
        if index.d != dim:
            raise IndexCorrupt(f"faiss shard {path} has width {index.d}, expected {dim}; it will be rebuilt")
        tombstones = np.asarray(meta.tombstones if meta is not None else (), np.int64)
        twins = None
        if spec.backend == "faiss_hnsw":
            twins = Twins.from_arrays(np.asarray(meta.twins if meta is not None else (), np.int64).reshape(-1, 2),
                                      np.asarray(meta.hidden if meta is not None else (), np.int64))
        shard = cls(index, spec=spec, dim=dim, tombstones=tombstones, twins=twins)
        shard._maybe_to_gpu()
        shard._refresh_count()
        # the graph's codes are read now, not at the first add, which runs under the collection's write lock
        if spec.backend == "faiss_hnsw" and (copies := shard._know_keys()) \
                and not (meta is not None and meta.twins_checked):
            raise IndexCorrupt(f"faiss shard {path} holds {copies} copies of other vectors in its graph (saved "
                               "before copies were kept out of it), which can trap searches; it will be rebuilt")
        return shard

    def _maybe_to_gpu(self) -> None:
        has_api = hasattr(faiss, "StandardGpuResources")
        device = choose_device(use_gpu=self.spec.use_gpu, backend=self.spec.backend,
                               num_gpus=faiss.get_num_gpus() if has_api else 0, has_gpu_api=has_api)
        if device == "gpu":  # pragma: no cover - needs faiss-gpu and CUDA; see tests/index/test_faiss_shard.py
            self._gpu_resources = faiss.StandardGpuResources()
            self._index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._index)
        self.device = device

    def _cpu_index(self) -> Any:
        if self.device == "gpu":  # pragma: no cover - needs faiss-gpu and CUDA
            return faiss.index_gpu_to_cpu(self._index)
        return self._index


def faiss_nbytes(index: Any) -> int:
    """Bytes a CPU faiss index holds in memory: codes, ids, graph or lists, and coarse quantiser."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap):
        return int(index.id_map.size()) * 8 + faiss_nbytes(index.index)
    if isinstance(index, faiss.IndexHNSW):
        hnsw = index.hnsw
        # faiss's stubs list a `graph` field instead of the `neighbors` and `offsets` vectors the library has
        graph = hnsw.neighbors.size() * 4 + hnsw.levels.size() * 4 + hnsw.offsets.size() * 8  # type: ignore[attr-defined]
        return int(graph) + faiss_nbytes(index.storage)
    if isinstance(index, faiss.IndexIVF):
        lists = int(index.ntotal) * (int(index.code_size) + 8)
        return lists + faiss_nbytes(index.quantizer) + (index.pq.M * index.pq.ksub * index.pq.dsub * 4
                                                        if isinstance(index, faiss.IndexIVFPQ) else 0)
    code_size = int(getattr(index, "code_size", index.d * 4))
    return int(index.ntotal) * code_size
