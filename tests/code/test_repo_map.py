"""Symbol graph + PageRank + budgeted repo map, on real parses of small repos."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragsvc.code.analysis import analyse_repository, definition_texts
from ragsvc.code.graph import GraphConfig, SymbolGraph
from ragsvc.code.repo_map import approx_token_count, build_map, render
from ragsvc.code.searcher import EmbeddingSearcher
from tests.code.conftest import write_files


def _graph(root: Path, config: GraphConfig | None = None) -> SymbolGraph:
    _, analyses, _ = analyse_repository(root)
    return SymbolGraph([a.tags for a in analyses], config=config or GraphConfig())


@pytest.fixture()
def hub_repo(tmp_path: Path) -> Path:
    files = {
        "lib/hub.py": "def shared_helper(x):\n    return x\n\n\ndef lonely_leaf(y):\n    return y\n",
        "lib/_private.py": "def _internal(z):\n    return z\n",
    }
    for i in range(6):
        files[f"app/user_{i}.py"] = (
            f"from lib.hub import shared_helper\n\n\ndef task_{i}(v):\n"
            f"    return shared_helper(v) + _internal(v)\n"
        )
    return write_files(tmp_path, files)


def test_referenced_everywhere_ranks_above_leaf(hub_repo: Path) -> None:
    ranked = [(d.symbol, r) for d, r in _graph(hub_repo).rank()]
    order = [symbol for symbol, _ in ranked]
    assert order[0] == "shared_helper"
    assert order.index("shared_helper") < order.index("lonely_leaf")
    scores = dict(ranked)
    # `_internal` has as many callers as `shared_helper`, but private names are damped.
    assert scores["shared_helper"] > scores["_internal"] > scores["lonely_leaf"]


def test_map_fits_budget_and_is_the_largest_that_does(hub_repo: Path) -> None:
    graph = _graph(hub_repo)
    for budget in (8, 20, 45, 80, 10_000):
        repo_map = build_map(graph, max_tokens=budget)
        assert repo_map.num_tokens <= budget
        assert approx_token_count(repo_map.text) == repo_map.num_tokens
        if repo_map.num_definitions < len(graph.definitions):  # one more definition would not fit
            bigger = render(repo_map.ranked, repo_map.num_definitions + 1, all_defs=graph.definitions)
            assert approx_token_count(bigger) > budget
    small = build_map(graph, max_tokens=20)
    assert small.text.startswith("lib/hub.py:\n    1│ def shared_helper(x):")
    assert build_map(graph, max_tokens=10_000).num_definitions == len(graph.definitions)


def test_map_shows_containers_and_uses_the_given_token_counter(polyglot: Path) -> None:
    graph = _graph(polyglot)
    repo_map = build_map(graph, max_tokens=10_000, count_tokens=len)  # characters as "tokens"
    assert repo_map.num_tokens == len(repo_map.text)
    assert "   17│ class Retrier(Base):\n   20│     def __init__(self, attempts):" in repo_map.text
    with pytest.raises(ValueError, match="max_tokens must be positive"):
        build_map(graph, max_tokens=0)


def test_query_naming_an_identifier_boosts_it(hub_repo: Path) -> None:
    graph = _graph(hub_repo)
    plain = build_map(graph, max_tokens=20)
    assert plain.ranked[0][0].symbol == "shared_helper" and "lonely_leaf" not in plain.text
    focused = build_map(graph, max_tokens=20, query="why does lonely_leaf return y")
    assert focused.ranked[0][0].symbol == "lonely_leaf"
    assert "lonely_leaf" in focused.text


@pytest.mark.slow
def test_query_aware_map_with_real_embeddings(polyglot: Path, minilm) -> None:
    _, analyses, _ = analyse_repository(polyglot)
    graph = SymbolGraph([a.tags for a in analyses])
    definitions, texts = definition_texts(analyses)
    searcher = EmbeddingSearcher(minilm, definitions, texts)
    nearest = searcher.nearest("retry a failing call several times", k=3)
    assert nearest[0][:2] == ("pkg/core.py", "Retrier.run") or nearest[0][:2] == ("pkg/core.py", "Retrier")
    repo_map = build_map(graph, max_tokens=40, query="retry a failing call several times", searcher=searcher)
    assert repo_map.ranked[0][0].symbol.startswith("Retrier")
    assert repo_map.text.startswith("pkg/core.py:")


def test_pagerank_matches_networkx(polyglot: Path, hub_repo: Path) -> None:
    import networkx as nx
    import numpy as np

    for root in (polyglot, hub_repo):
        graph = _graph(root)
        teleport = {node: 1.0 for node in graph.nodes[: len(graph.files)]}
        teleport[graph.nodes[len(graph.files)]] = 3.0  # a definition too
        for mentioned in (frozenset(), frozenset({"normalize", "shared_helper"})):
            reference = nx.pagerank(graph.to_networkx(teleport, mentioned=mentioned), alpha=0.85,
                                    personalization=teleport, dangling=teleport, tol=1e-13, max_iter=1000)
            ours = graph.pagerank(teleport, mentioned=mentioned)
            np.testing.assert_allclose(ours, [reference[n] for n in graph.nodes], atol=1e-9)
