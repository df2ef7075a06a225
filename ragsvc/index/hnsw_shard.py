"""HnswShard: one hnswlib graph. Labels are chunk ids; capacity grows by doubling as vectors arrive.

hnswlib raises bare RuntimeErrors ("Cannot return the results in a contiguous 2D array", "exceeds the
specified limit", "Label not found"); they are handled here: k is capped at what exists, capacity is grown
before adds, a filtered search that cannot fill k falls back to an exact scan of the allowed ids, and
anything else becomes a ragsvc error saying what to do.

Identical vectors go into the graph once (`twins.py`: copies form a cluster a search cannot leave); the
others are answered beside their representative, recorded in the shard's manifest entry.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hnswlib
import numpy as np

from ragsvc.errors import IndexCorrupt
from ragsvc.index.atomic import atomic_write
from ragsvc.index.manifest import ShardMeta
from ragsvc.index.results import ShardHits
from ragsvc.index.shard import (
    PAD_ID,
    ShardMetric,
    as_ids,
    check_add,
    check_queries,
    exact_scores,
    pad,
    top_k,
)
from ragsvc.index.twins import Twins, expand_hits

logger = logging.getLogger(__name__)

_INITIAL_CAPACITY = 1024


class HnswShard:
    def __init__(self, dim: int, *, metric: ShardMetric = "ip", m: int = 16, ef_construction: int = 200,
                 ef_search: int = 64, num_threads: int = 2, capacity: int = _INITIAL_CAPACITY) -> None:
        self.dim = dim
        self.metric: ShardMetric = metric
        self.ef_search = ef_search
        self._num_threads = num_threads
        self._index = hnswlib.Index(space=metric, dim=dim)
        self._index.init_index(max_elements=max(capacity, 1), M=m, ef_construction=ef_construction, random_seed=100)
        self._index.set_ef(ef_search)
        self._ef = ef_search
        self._deleted = 0  # graph nodes marked deleted
        self._twins = Twins()
        self._keys_known = True  # a loaded graph's vectors are read into `_twins` when it loads

    def __len__(self) -> int:
        return self._graph_live() - self._twins.num_hidden + self._twins.num_twins

    def _graph_live(self) -> int:
        return int(self._index.element_count) - self._deleted

    @property
    def nbytes(self) -> int:
        # hnswlib's own accounting of vectors + level-0 graph + upper levels + labels, for the live capacity.
        return int(self._index.index_file_size())

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = check_add(ids, vectors, self.dim)
        if not len(ids):
            return
        self._know_keys()
        ids, vectors = self._twins.place(ids, vectors, self._vector)
        if not len(ids):
            return
        self._undelete(ids)
        needed = int(self._index.element_count) + len(ids)
        capacity = int(self._index.get_max_elements())
        if needed > capacity:  # grow ahead (doubling) instead of letting hnswlib fail on the limit
            self._index.resize_index(max(needed, 2 * capacity))
        try:
            self._index.add_items(vectors, ids, num_threads=self._num_threads)
        except RuntimeError as exc:
            # check_add already refused malformed input and the capacity was grown above, so the index itself
            # is in a state it cannot extend
            raise IndexCorrupt(f"hnswlib refused the vectors ({exc}); rebuild the index from the store") from exc

    def delete(self, ids: np.ndarray) -> None:
        for label in self._twins.remove(np.asarray(ids, dtype=np.int64).reshape(-1).tolist()):
            try:
                self._index.mark_deleted(int(label))
                self._deleted += 1
            except RuntimeError:  # not held here, or already deleted: deleting is idempotent
                continue

    def live_ids(self) -> np.ndarray:
        """Every live label; hnswlib lists deleted ones too, so they are probed one by one (reconcile only)."""
        labels = self._graph_labels()
        if self._twins.num_hidden:
            labels = labels[~np.isin(labels, np.fromiter(self._twins.hidden, np.int64))]
        return np.concatenate([labels, np.asarray(self._twins.twin_labels(), np.int64)])

    def _graph_labels(self) -> np.ndarray:
        """The graph's live labels (hidden representatives included)."""
        labels = np.asarray(self._index.get_ids_list(), dtype=np.int64)
        return labels if not self._deleted else self._graph_get(labels)[0]

    def get(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found ids (m,), their stored vectors (m, dim)) for the live ids among `ids`."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if not self._twins.num_twins and not self._twins.num_hidden:
            return self._graph_get(ids)
        found, nodes = [], []
        for label in ids.tolist():
            rep = self._twins.rep_of(label)
            if rep is not None:
                found.append(label)
                nodes.append(rep)
            elif not self._twins.is_hidden(label):
                found.append(label)
                nodes.append(label)
        held, vectors = self._graph_get(np.asarray(nodes, np.int64))
        row_of = {int(n): i for i, n in enumerate(held.tolist())}
        keep = [i for i, n in enumerate(nodes) if n in row_of]
        return (np.asarray([found[i] for i in keep], np.int64),
                vectors[[row_of[nodes[i]] for i in keep]].reshape(len(keep), self.dim))

    def _graph_get(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found ids, vectors) of live graph nodes among `ids`."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if not len(ids):
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        try:  # one call when every id is live (the usual case); hnswlib raises if any is not
            return ids, np.asarray(self._index.get_items(ids, return_type="numpy"), np.float32).reshape(-1, self.dim)
        except RuntimeError:
            pass
        found, vectors = [], []
        for label in ids:
            try:
                vectors.append(self._index.get_items([int(label)], return_type="numpy")[0])
                found.append(int(label))
            except RuntimeError:
                continue
        if not found:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        return np.asarray(found, np.int64), np.asarray(vectors, np.float32).reshape(len(found), self.dim)

    def search(self, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None,
               ef_search: int | None = None) -> ShardHits:
        queries = check_queries(queries, self.dim, k)
        allowed = as_ids(allowed_ids)
        twinned = bool(self._twins.num_twins or self._twins.num_hidden)
        nodes = None if allowed is None or not twinned else self._twins.reps_for(allowed)
        k_avail = min(k, self._graph_live() if allowed is None else len(allowed if nodes is None else nodes))
        if k_avail == 0:
            return pad(np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64), k)
        try:
            labels, distances = self._query(queries, k_avail, allowed if nodes is None else nodes,
                                            ef_search or self.ef_search)
        except RuntimeError:
            if allowed is None:
                raise
            # The filter left fewer reachable vectors than k_avail; scan the allowed ids exactly instead.
            return self._exact_subset(queries, k, allowed)
        scores = (1.0 - distances) if self.metric == "ip" else -distances  # hnswlib: ip distance = 1 - <q, x>
        if twinned:
            return expand_hits(self._twins, scores, labels.view(np.int64), k, allowed)
        return pad(scores, labels.view(np.int64), k)  # float32 already; labels are uint64 below 2**63

    def _vector(self, label: int) -> np.ndarray:
        """A graph node's stored vector."""
        return np.asarray(self._index.get_items([label], return_type="numpy"), np.float32).reshape(self.dim)

    def _know_keys(self) -> int:
        """Read a loaded graph's vectors into the twin keys once, so later copies of them are matched; return
        how many nodes are copies of another node (a graph saved before copies were kept out of it)."""
        if self._keys_known:
            return 0
        labels = self._graph_labels()
        copies = 0
        for start in range(0, len(labels), 65_536):
            part = labels[start : start + 65_536]
            found, vectors = self._graph_get(part)
            for label, first in self._twins.know(found.tolist(), vectors):
                copies += int(np.array_equal(self._vector(label), self._vector(first)))
        self._keys_known = True
        return copies

    def _query(self, queries: np.ndarray, k: int, allowed: np.ndarray | set[int] | None,
               ef_search: int) -> tuple[np.ndarray, np.ndarray]:
        ef = max(ef_search, k)
        if ef != self._ef:
            self._index.set_ef(ef)
            self._ef = ef
        if allowed is None:
            return self._index.knn_query(queries, k=k, num_threads=1)
        allowed_set = allowed if isinstance(allowed, set) else set(allowed.tolist())
        return self._index.knn_query(queries, k=k, num_threads=1, filter=allowed_set.__contains__)

    def _exact_subset(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> ShardHits:
        ids, vectors = self.get(allowed)
        scores = exact_scores(queries, vectors, self.metric)  # (q, m)
        return top_k(scores, np.broadcast_to(ids, scores.shape), k)

    def _undelete(self, ids: np.ndarray) -> None:
        """hnswlib updates a live label in place but keeps a deleted one hidden; unmark before re-adding."""
        if not self._deleted:
            return
        for label in ids:
            try:
                self._index.unmark_deleted(int(label))
                self._deleted -= 1
            except RuntimeError:
                continue

    def save(self, path: Path) -> None:
        atomic_write(path, lambda tmp: self._index.save_index(str(tmp)))

    @classmethod
    def load(cls, path: Path, *, dim: int, metric: ShardMetric = "ip", ef_search: int = 64,
             num_threads: int = 2, num_deleted: int = 0, twins: np.ndarray | None = None,
             hidden: np.ndarray | None = None, twins_checked: bool = False) -> HnswShard:
        """`twins` ((n, 2) [twin, representative]), `hidden` and `twins_checked`: what `manifest_meta` recorded.
        The graph's vectors are read once here into the twin keys. One not known to keep copies out (saved
        before twins, or with no manifest) that holds copies is refused as IndexCorrupt, so its collection is
        rebuilt from the catalog: copies trap its searches (`twins.py`)."""
        shard = cls.__new__(cls)
        shard.dim, shard.metric, shard.ef_search, shard._num_threads = dim, metric, ef_search, num_threads
        shard._index = hnswlib.Index(space=metric, dim=dim)
        try:
            shard._index.load_index(str(path))
        except (RuntimeError, OSError, MemoryError) as exc:
            raise IndexCorrupt(f"hnsw shard {path} cannot be loaded ({exc}); it will be rebuilt") from exc
        shard._index.set_ef(ef_search)
        shard._ef = ef_search
        shard._deleted = num_deleted
        shard._twins = Twins.from_arrays(np.zeros((0, 2), np.int64) if twins is None else twins,
                                         np.zeros(0, np.int64) if hidden is None else hidden)
        shard._keys_known = False
        # read at load, not at the first add: that runs under the collection's write lock, which searches wait on
        if (copies := shard._know_keys()) and not twins_checked:
            raise IndexCorrupt(f"hnsw shard {path} holds {copies} copies of other vectors in its graph (saved "
                               "before copies were kept out of it), which can trap searches; it will be rebuilt")
        return shard

    def manifest_meta(self) -> ShardMeta:
        """Marked-deleted labels count (hnswlib's file does not report it) and the twins, recorded in the
        manifest."""
        pairs, hidden = self._twins.to_arrays()
        return ShardMeta(num_deleted=self._deleted, twins=tuple(pairs.reshape(-1).tolist()),
                         hidden=tuple(hidden.tolist()), twins_checked=True)


__all__ = ["HnswShard", "PAD_ID"]
