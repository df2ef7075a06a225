"""The symbol graph of a repository and personalised PageRank over it.

Nodes are files and definitions. A reference made inside a definition (or at module level of a file) to a name
adds an edge from that definition (or file) to every definition of the name, weighted √(number of references),
split among the name's definitions, boosted for names the request mentions and damped for private names and
for ubiquitous ones (defined in many files, like `__init__` or `get`). Each file links to its definitions, so
the teleport mass that lands on files reaches their code and flows on along calls. PageRank personalised on
files, definitions or query hits then ranks the definitions that matter (aider's repo map, with
definition-level nodes).
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import networkx as nx

from ragsvc.code.tags import Definition, FileTags

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GraphConfig:
    mention_boost: float = 10.0
    """Edge multiplier for names that appear in the request."""
    private_damping: float = 0.1
    """Edge multiplier for names starting with `_` (implementation details)."""
    ubiquitous_files: int = 5
    """Names defined in more files than this are damped: a reference to `run` says little about which one."""
    ubiquitous_damping: float = 0.1
    containment_weight: float = 0.5
    """Weight of the file -> definition edge relative to a single reference (√1 = 1)."""
    alpha: float = 0.85
    """PageRank damping: probability of following an edge rather than jumping back to the personalisation."""

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")


def file_node(rel_path: str) -> str:
    return f"file:{rel_path}"


def def_node(definition: Definition) -> str:
    return f"def:{definition.rel_path}:{definition.symbol}:{definition.start_line}"


class SymbolGraph:
    """Reference counts between definitions and files, kept so per-request boosts only re-weight edges."""

    def __init__(self, tags: Sequence[FileTags], *, config: GraphConfig = GraphConfig()) -> None:
        self.config = config
        self.files: list[str] = [t.rel_path for t in tags]
        self.definitions: dict[str, Definition] = {def_node(d): d for t in tags for d in t.definitions}
        self._by_name: dict[str, list[str]] = defaultdict(list)
        for node, definition in self.definitions.items():
            self._by_name[definition.name].append(node)
        files_defining: dict[str, set[str]] = defaultdict(set)
        for definition in self.definitions.values():
            files_defining[definition.name].add(definition.rel_path)
        self._num_defining_files = {name: len(paths) for name, paths in files_defining.items()}
        # (source node, referenced name) -> number of references
        self._ref_counts: Counter[tuple[str, str]] = Counter()
        for file_tags in tags:
            self._count_references(file_tags)
        self._base: nx.DiGraph | None = None

    def _count_references(self, file_tags: FileTags) -> None:
        # Attribute each reference to the innermost definition whose lines contain it; the file otherwise.
        spans = sorted(((d.start_line, -d.end_line, def_node(d)) for d in file_tags.definitions))
        starts = [s[0] for s in spans]
        for ref in file_tags.references:
            if ref.name not in self._by_name:
                continue  # names defined nowhere in the repo (builtins, libraries) carry no rank
            source = file_node(file_tags.rel_path)
            for i in range(bisect.bisect_right(starts, ref.line) - 1, -1, -1):
                start, neg_end, node = spans[i]
                if start <= ref.line <= -neg_end:
                    source = node
                    break
            self._ref_counts[(source, ref.name)] += 1

    def _name_weight(self, name: str, mentioned: frozenset[str]) -> float:
        weight = 1.0
        if name in mentioned:
            weight *= self.config.mention_boost
        if name.startswith("_"):
            weight *= self.config.private_damping
        if self._num_defining_files.get(name, 0) > self.config.ubiquitous_files:
            weight *= self.config.ubiquitous_damping
        return weight

    def graph(self, *, mentioned: frozenset[str] = frozenset()) -> nx.DiGraph:
        """The weighted graph; cached when no name is mentioned (the common, query-less case)."""
        if not mentioned and self._base is not None:
            return self._base
        graph = nx.DiGraph()
        graph.add_nodes_from(file_node(f) for f in self.files)
        for node, definition in self.definitions.items():
            # Containment one way only: a file's rank reaches its definitions. The way back would form a two-node
            # loop that keeps rank circulating in a file's lone definition, however unused.
            graph.add_edge(file_node(definition.rel_path), node, weight=self.config.containment_weight)
        for (source, name), count in self._ref_counts.items():
            targets = self._by_name[name]
            weight = math.sqrt(count) * self._name_weight(name, mentioned) / len(targets)
            for target in targets:
                if target == source:
                    continue  # recursion is not evidence of importance
                previous = graph.get_edge_data(source, target, {"weight": 0.0})["weight"]
                graph.add_edge(source, target, weight=previous + weight)
        if not mentioned:
            self._base = graph
        return graph

    def rank(
        self,
        *,
        personalization: Mapping[str, float] | None = None,
        mentioned: frozenset[str] = frozenset(),
    ) -> list[tuple[Definition, float]]:
        """Definitions best first with their PageRank. `personalization` maps node ids to teleport weights;
        by default every file gets the same weight."""
        graph = self.graph(mentioned=mentioned)
        if graph.number_of_nodes() == 0:
            return []
        teleport = {n: w for n, w in (personalization or {}).items() if n in graph and w > 0}
        if not teleport:
            teleport = {file_node(f): 1.0 for f in self.files}
        try:
            ranks = nx.pagerank(graph, alpha=self.config.alpha, personalization=teleport, dangling=teleport,
                                weight="weight", max_iter=200, tol=1e-8)
        except nx.PowerIterationFailedConvergence:
            logger.warning("PageRank did not converge on %d nodes; ranking by in-degree", graph.number_of_nodes())
            ranks = dict(graph.in_degree(weight="weight"))
        ranked = [(self.definitions[n], float(ranks.get(n, 0.0))) for n in self.definitions]
        ranked.sort(key=lambda item: (-item[1], item[0].rel_path, item[0].start_line))
        return ranked

    def nodes_named(self, names: frozenset[str]) -> list[str]:
        return [node for name in names for node in self._by_name.get(name, [])]
