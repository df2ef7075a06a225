"""The symbol graph of a repository and personalised PageRank over it.

Nodes are files, definitions and names. A reference made inside a definition (or at module level of a file)
adds weight √(number of references) on the edge from that definition (or file) to the referenced name, boosted
for names the request mentions and damped for private names and for ubiquitous ones (defined in many files,
like `forward` or `get`). A name splits what it receives evenly among its definitions; each file links to its
definitions, so teleport mass that lands on files reaches their code and flows on along calls.

Why name nodes instead of an edge from every referrer to every definition (aider's layout): in a large repository
`__init__` or `forward` has hundreds of definitions and thousands of references, and the direct edges grow as
their product (800k edges for 4k definitions of transformers' models); through a name node they grow as the sum.

PageRank runs as a power iteration over a cached sparse transition matrix (a query only re-weights the edges
into the names it mentions); `networkx.pagerank` on `to_networkx()` is the reference it is tested against.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from ragsvc.code.tags import Definition, FileTags

if TYPE_CHECKING:
    import networkx as nx

logger = logging.getLogger(__name__)


GENERIC_NAMES: frozenset[str] = frozenset({
    "get", "set", "items", "keys", "values", "append", "extend", "update", "pop", "add", "remove", "clear", "copy",
    "close", "open", "read", "write", "join", "split", "strip", "format", "replace", "find", "index", "count",
    "push", "map", "filter", "reduce", "forEach", "then", "toString", "length", "size", "len", "iter", "next",
})


@dataclass(frozen=True, slots=True)
class GraphConfig:
    mention_boost: float = 10.0
    """Edge multiplier for names that appear in the request."""
    private_damping: float = 0.1
    """Edge multiplier for names starting with `_` (implementation details)."""
    ubiquitous_files: int = 5
    """Names defined in more files than this are damped: a reference to `run` says little about which one."""
    ubiquitous_damping: float = 0.1
    generic_names: frozenset[str] = GENERIC_NAMES
    generic_damping: float = 0.01
    """Damped hard: method names of built-in containers and files, so `d.get(k)` on a dict does not count as a
    call to whichever class in the repository happens to define `get`."""
    containment_weight: float = 0.5
    """Weight of the file -> definition edge relative to a single reference (√1 = 1)."""
    alpha: float = 0.85
    """PageRank damping: probability of following an edge rather than jumping back to the personalisation."""
    max_iter: int = 100
    tol: float = 1e-8
    """Stop when the L1 change of the rank vector falls below this (rankings settle long before)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")


def file_node(rel_path: str) -> str:
    return f"file:{rel_path}"


def def_node(definition: Definition) -> str:
    return f"def:{definition.rel_path}:{definition.symbol}:{definition.start_line}"


def name_node(name: str) -> str:
    return f"name:{name}"


class SymbolGraph:
    """Nodes, weighted edges (as arrays) and cached transition matrices; built once per set of tags."""

    def __init__(self, tags: Sequence[FileTags], *, config: GraphConfig = GraphConfig()) -> None:
        self.config = config
        self.files: list[str] = [t.rel_path for t in tags]
        self.definitions: dict[str, Definition] = {def_node(d): d for t in tags for d in t.definitions}
        defs_by_name: dict[str, list[str]] = defaultdict(list)
        for node, definition in self.definitions.items():
            defs_by_name[definition.name].append(node)
        self._defs_by_name = dict(defs_by_name)
        self.nodes: list[str] = [file_node(f) for f in self.files] + list(self.definitions)
        self.nodes += [name_node(n) for n in self._defs_by_name]
        self.index: dict[str, int] = {n: i for i, n in enumerate(self.nodes)}
        self._name_multiplier = self._multipliers(tags)
        self._build_edges(tags)
        self._base: tuple[sp.csr_matrix, np.ndarray] | None = None

    def _multipliers(self, tags: Sequence[FileTags]) -> dict[str, float]:
        defining_files: dict[str, set[str]] = defaultdict(set)
        for t in tags:
            for d in t.definitions:
                defining_files[d.name].add(t.rel_path)
        out = {}
        for name in self._defs_by_name:
            weight = self.config.private_damping if name.startswith("_") else 1.0
            if len(defining_files[name]) > self.config.ubiquitous_files:
                weight *= self.config.ubiquitous_damping
            if name in self.config.generic_names:
                weight *= self.config.generic_damping
            out[name] = weight
        return out

    def _build_edges(self, tags: Sequence[FileTags]) -> None:
        src: list[int] = []
        dst: list[int] = []
        weight: list[float] = []
        via: list[str | None] = []  # the referenced name, for edges into name nodes (query boosts)
        for node, definition in self.definitions.items():
            src.append(self.index[file_node(definition.rel_path)])
            dst.append(self.index[node])
            weight.append(self.config.containment_weight)
            via.append(None)
        for name, nodes in self._defs_by_name.items():
            for node in nodes:
                src.append(self.index[name_node(name)])
                dst.append(self.index[node])
                weight.append(1.0 / len(nodes))
                via.append(None)
        for (source, name), count in self._reference_counts(tags).items():
            if self._defs_by_name[name] == [source]:
                continue  # recursion is not evidence of importance
            src.append(self.index[source])
            dst.append(self.index[name_node(name)])
            weight.append(math.sqrt(count) * self._name_multiplier[name])
            via.append(name)
        self._src = np.asarray(src, dtype=np.int64)
        self._dst = np.asarray(dst, dtype=np.int64)
        self._weight = np.asarray(weight, dtype=np.float64)
        self._via = via

    def _reference_counts(self, tags: Sequence[FileTags]) -> Counter[tuple[str, str]]:
        """(source node, referenced name) -> count; a reference belongs to the innermost definition around it."""
        counts: Counter[tuple[str, str]] = Counter()
        for file_tags in tags:
            spans = sorted((d.start_line, -d.end_line, def_node(d)) for d in file_tags.definitions)
            starts = [s[0] for s in spans]
            for ref in file_tags.references:
                if ref.name not in self._defs_by_name:
                    continue  # names defined nowhere in the repo (builtins, libraries) carry no rank
                source = file_node(file_tags.rel_path)
                for i in range(bisect.bisect_right(starts, ref.line) - 1, -1, -1):
                    if spans[i][0] <= ref.line <= -spans[i][1]:
                        source = spans[i][2]
                        break
                counts[(source, ref.name)] += 1
        return counts

    def edge_weights(self, mentioned: frozenset[str] = frozenset()) -> np.ndarray:
        if not mentioned:
            return self._weight
        boost = np.array([self.config.mention_boost if v in mentioned else 1.0 for v in self._via])
        return self._weight * boost

    def _transition(self, mentioned: frozenset[str]) -> tuple[sp.csr_matrix, np.ndarray]:
        """Transition matrix (num_nodes, num_nodes) and each node's leftover probability (num_nodes,).

        A node's out-weights are divided by max(their sum, 1), not by their sum: weights are absolute, so a
        function whose only call is a damped `d.get(k)` passes 1% of its rank along, not all of it. What is not
        passed along (and all of a node without out-edges) returns to the personalisation, like dangling mass.
        """
        if not mentioned and self._base is not None:
            return self._base
        n = len(self.nodes)
        weights = self.edge_weights(mentioned)
        matrix = sp.csr_matrix((weights, (self._src, self._dst)), shape=(n, n))  # duplicates are summed
        out = np.asarray(matrix.sum(axis=1)).ravel()  # (num_nodes,)
        scale = 1.0 / np.maximum(out, 1.0)
        result = ((sp.diags(scale) @ matrix).tocsr(), 1.0 - out * scale)
        if not mentioned:
            self._base = result
        return result

    def pagerank(self, personalization: Mapping[str, float], *, mentioned: frozenset[str] = frozenset()) -> np.ndarray:
        """Personalised PageRank (num_nodes,) by power iteration; leftover and dangling mass returns to the
        personalisation (networkx.pagerank with those leftovers as edges to the personalised nodes agrees)."""
        teleport = self.teleport_vector(personalization)
        transition, leftover = self._transition(mentioned)
        transposed = transition.T.tocsr()
        alpha = self.config.alpha
        x = teleport.copy()
        for _ in range(self.config.max_iter):
            previous = x
            # (leftover * x).sum(), not leftover @ x: BLAS dot spins threads and is 50x slower on a busy box
            x = alpha * (transposed @ x) + (alpha * float((leftover * x).sum()) + 1 - alpha) * teleport
            if np.abs(x - previous).sum() < self.config.tol:
                break
        return x

    def teleport_vector(self, personalization: Mapping[str, float]) -> np.ndarray:
        """(num_nodes,) teleport distribution; uniform over files when `personalization` names no known node."""
        teleport = np.zeros(len(self.nodes))
        for node, w in personalization.items():
            if node in self.index and w > 0:
                teleport[self.index[node]] += w
        if teleport.sum() == 0:
            teleport[: len(self.files)] = 1.0
        return teleport / teleport.sum()

    def rank(self, *, personalization: Mapping[str, float] | None = None,
             mentioned: frozenset[str] = frozenset()) -> list[tuple[Definition, float]]:
        """Definitions best first with their PageRank. `personalization` maps node ids to teleport weights;
        by default every file gets the same weight."""
        if not self.definitions:
            return []
        ranks = self.pagerank(personalization or {}, mentioned=mentioned)
        first = len(self.files)
        ranked = [(d, float(ranks[first + i])) for i, d in enumerate(self.definitions.values())]
        ranked.sort(key=lambda item: (-item[1], item[0].rel_path, item[0].start_line))
        return ranked

    def nodes_named(self, names: frozenset[str]) -> list[str]:
        return [node for name in names for node in self._defs_by_name.get(name, [])]

    def to_networkx(self, personalization: Mapping[str, float], *,
                    mentioned: frozenset[str] = frozenset()) -> nx.DiGraph:
        """The same walk as a networkx DiGraph for `networkx.pagerank` (the reference in tests): out-weights
        scaled as in `_transition`, each node's leftover as edges to the personalised nodes."""
        import networkx as nx

        transition, leftover = self._transition(mentioned)
        teleport = self.teleport_vector(personalization)
        graph = nx.DiGraph()
        graph.add_nodes_from(self.nodes)
        coo = transition.tocoo()
        edges: dict[tuple[int, int], float] = defaultdict(float)
        for s, d, w in zip(coo.row, coo.col, coo.data, strict=True):
            edges[(int(s), int(d))] += float(w)
        for s in np.flatnonzero((leftover > 1e-15) & (leftover < 1.0 - 1e-15)):  # fully dangling: networkx's own
            for d in np.flatnonzero(teleport):
                edges[(int(s), int(d))] += float(leftover[s] * teleport[d])
        graph.add_weighted_edges_from((self.nodes[s], self.nodes[d], w) for (s, d), w in edges.items())
        return graph
