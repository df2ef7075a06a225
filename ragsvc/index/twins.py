"""Exact-duplicate vectors kept out of a graph index: one copy in the graph, the others answered beside it.

A corpus repeats itself: boilerplate chunks, a footer on every page, one text under many ids. Identical
vectors break an HNSW graph. When a vector joins, the graph keeps a neighbour only if it is closer to the new
vector than to every neighbour already kept; once an identical vector is kept, nothing else is (its distance
to the new vector equals its distance to the copy), so copies link only to each other. A few hundred copies
form a closed cluster, and a search that enters it never leaves: a collection with one document of 2,400
identical chunks answered every query with those chunks (cosine 0.06) instead of the sample's passages.

`Twins` keeps the first vector of each distinct value in the graph (its representative) and records the later
ones (its twins) beside it; a search expands a representative into itself and its twins, all with its score.
Deleting a representative that still has twins hides it (its node stays in the graph, for them) instead of
removing it; the node goes once the last twin does. Keys are 64-bit hashes of the vectors' bytes, and a
match is confirmed on the vectors themselves, so a hash collision never pairs two different vectors.

Pure bookkeeping: the graph is the caller's (`hnsw_shard.py`; `faiss_shard.py` for faiss HNSW, which keys
the codes it stores, so vectors its 8-bit layout would store identically count as copies too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from ragsvc.index.results import ShardHits
from ragsvc.index.shard import PAD_ID

VectorOf = Callable[[int], np.ndarray]
"""A representative's stored vector, by label."""


def vector_key(vector: np.ndarray) -> int:
    """A 64-bit hash of a vector's bytes. Python salts it per process: keys live in memory only (a loaded
    graph's are read again, `know`)."""
    return hash(np.ascontiguousarray(vector, dtype=np.float32).tobytes())


class Twins:
    """Which graph labels stand for which ids: representatives, their twins, hidden representatives."""

    def __init__(self) -> None:
        self._rep_of_key: dict[int, int] = {}  # vector key -> the label in the graph holding that vector
        self._key_of_rep: dict[int, int] = {}
        self._twins: dict[int, list[int]] = {}  # representative -> twin labels (not in the graph)
        self._rep_of: dict[int, int] = {}  # twin -> representative
        self._hidden: set[int] = set()  # deleted representatives whose node stays for their twins

    @property
    def num_twins(self) -> int:
        return len(self._rep_of)

    @property
    def num_hidden(self) -> int:
        return len(self._hidden)

    @property
    def hidden(self) -> set[int]:
        return self._hidden

    def twin_labels(self) -> list[int]:
        return list(self._rep_of)

    def rep_of(self, label: int) -> int | None:
        """The representative whose vector `label` shares, if `label` is a twin."""
        return self._rep_of.get(label)

    def is_hidden(self, label: int) -> bool:
        return label in self._hidden

    def know(self, labels: Iterable[int], vectors: np.ndarray) -> list[tuple[int, int]]:
        """Record graph nodes that exist already (a loaded graph): their vectors become keys later ones match.
        Returns (label, earlier label) for nodes whose key another node holds already: copies in the graph,
        or a hash collision (the caller compares the vectors)."""
        clashes = []
        for label, vector in zip(labels, vectors, strict=True):
            key = vector_key(vector)
            first = self._rep_of_key.setdefault(key, int(label))
            if first != label:
                clashes.append((int(label), first))
            self._key_of_rep.setdefault(int(label), key)
        return clashes

    def place(self, ids: np.ndarray, vectors: np.ndarray, vector_of: VectorOf) -> tuple[np.ndarray, np.ndarray]:
        """Record (n,) `ids` with (n, dim) `vectors`; return the (ids, vectors) the graph must add: the first of
        each distinct vector, and for a node given a new vector while it has twins, the twin that takes over
        its old one. Call before the graph changes (`vector_of` reads the vectors it holds now)."""
        adding: dict[int, np.ndarray] = {}  # label -> vector, for the graph, in order

        def stored(label: int) -> np.ndarray:
            row = adding.get(label)
            return row if row is not None else vector_of(label)

        for label, vector in zip(ids.tolist(), vectors, strict=True):
            key = vector_key(vector)
            rep = self._rep_of.get(label)
            if rep is not None:  # a twin given again
                if self._key_of_rep.get(rep) == key and np.array_equal(stored(rep), vector):
                    continue
                self._drop_twin(label)
            elif label in self._key_of_rep:  # a node of the graph given again
                if self._key_of_rep[label] == key and np.array_equal(stored(label), vector):
                    self._hidden.discard(label)  # re-added after its delete: visible again
                    continue
                heir = self._retire(label, stored(label))
                if heir is not None:
                    adding[heir[0]] = heir[1]
            same = self._rep_of_key.get(key)
            if same is not None and same != label and np.array_equal(stored(same), vector):
                self._twins.setdefault(same, []).append(label)
                self._rep_of[label] = same
                continue
            self._rep_of_key[key] = label
            self._key_of_rep[label] = key
            adding[label] = np.asarray(vector, dtype=np.float32)
        if not adding:
            return np.zeros(0, np.int64), np.zeros((0, vectors.shape[1]), np.float32)
        return np.asarray(list(adding), np.int64), np.stack(list(adding.values())).astype(np.float32, copy=False)

    def remove(self, ids: Iterable[int]) -> list[int]:
        """Forget deleted `ids`; return the labels whose graph nodes must be deleted now."""
        gone: list[int] = []
        for label in ids:
            label = int(label)
            rep = self._rep_of.get(label)
            if rep is not None:
                self._drop_twin(label)
                if rep in self._hidden and not self._twins.get(rep):
                    self._hidden.discard(rep)
                    self._forget_node(rep)
                    gone.append(rep)
            elif self._twins.get(label):
                self._hidden.add(label)  # its twins still answer with its node
            elif label not in self._hidden:
                self._forget_node(label)
                gone.append(label)
        return gone

    def members(self, label: int) -> list[int]:
        """The live ids a graph hit on `label` stands for: itself unless hidden, then its twins."""
        twins = self._twins.get(label, [])
        return twins if label in self._hidden else [label, *twins]

    def reps_for(self, allowed: np.ndarray) -> set[int]:
        """The graph labels a filter to `allowed` ids must let through."""
        return {self._rep_of.get(a, a) for a in allowed.tolist()}

    def to_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(pairs (n, 2) int64 of [twin, representative], hidden (m,) int64), for the manifest."""
        pairs = np.asarray(list(self._rep_of.items()), np.int64).reshape(-1, 2)
        return pairs, np.asarray(sorted(self._hidden), np.int64)

    @classmethod
    def from_arrays(cls, pairs: np.ndarray, hidden: np.ndarray) -> Twins:
        """The twins of a saved shard; keys are added by `know` once the graph's vectors are read."""
        twins = cls()
        for twin, rep in np.asarray(pairs, np.int64).reshape(-1, 2).tolist():
            twins._twins.setdefault(rep, []).append(twin)
            twins._rep_of[twin] = rep
        twins._hidden = {int(h) for h in np.asarray(hidden, np.int64).tolist()}
        return twins

    def _drop_twin(self, label: int) -> None:
        rep = self._rep_of.pop(label)
        twins = self._twins[rep]
        twins.remove(label)
        if not twins:
            del self._twins[rep]

    def _forget_node(self, label: int) -> int | None:
        """Drop a graph node's key; return it (None: the node had none)."""
        key = self._key_of_rep.pop(label, None)
        if key is not None and self._rep_of_key.get(key) == label:
            del self._rep_of_key[key]
        return key

    def _retire(self, label: int, old_vector: np.ndarray) -> tuple[int, np.ndarray] | None:
        """`label`'s node takes a new vector: its twins, if any, move to the first of them, which the graph
        must then add with the old vector (returned with it)."""
        twins = self._twins.pop(label, [])
        self._hidden.discard(label)
        key = self._forget_node(label)
        if not twins or key is None:
            return None
        heir, rest = twins[0], twins[1:]
        del self._rep_of[heir]
        for twin in rest:
            self._rep_of[twin] = heir
        if rest:
            self._twins[heir] = rest
        self._rep_of_key[key] = heir
        self._key_of_rep[heir] = key
        return heir, np.array(old_vector, dtype=np.float32)


def expand_hits(twins: Twins, scores: np.ndarray, labels: np.ndarray, k: int,
                allowed: np.ndarray | None) -> ShardHits:
    """A graph's hits (q, n), best first -> the ids they stand for (a representative's twins share its score),
    k per query, -1 / -inf padded; with `allowed`, only those ids."""
    permitted = None if allowed is None else set(allowed.tolist())
    out_scores = np.full((len(labels), k), -np.inf, np.float32)
    out_ids = np.full((len(labels), k), PAD_ID, np.int64)
    for row, (row_labels, row_scores) in enumerate(zip(labels.tolist(), scores.tolist(), strict=True)):
        filled = 0
        for label, score in zip(row_labels, row_scores, strict=True):
            if label == PAD_ID:
                continue
            for member in twins.members(label):
                if permitted is None or member in permitted:
                    out_ids[row, filled], out_scores[row, filled] = member, score
                    filled += 1
                    if filled == k:
                        break
            if filled == k:
                break
    return ShardHits(ids=out_ids, scores=out_scores)
