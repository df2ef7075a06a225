"""code_search over a scripted store: the graph stage re-ranks the dense hits and is recorded in served_by."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragsvc.code.analysis import analyse_repository
from ragsvc.code.graph import GraphConfig, SymbolGraph
from ragsvc.code.search import code_search
from ragsvc.types import ChunkId, DocumentId, Hit, SearchResult, ServedBy
from tests.code.conftest import write_files

DENSE = ServedBy.ann(backend="hnsw", num_shards=1, dims=384)


class ScriptedStore:
    """Answers every search with the same dense hits, as VectorStore.search would shape them."""

    def __init__(self, hits: list[Hit]) -> None:
        self.hits = hits

    def search(self, collection: str, **options: Any) -> SearchResult:
        return SearchResult(list(self.hits), {"total_ms": 1.0}, DENSE)


def _hit(i: int, path: str, symbol: str, score: float) -> Hit:
    return Hit(ChunkId(i), DocumentId(path), f"def {symbol}", score, {"path": path, "symbol": symbol})


def test_graph_stage_is_recorded_after_the_dense_answer(tmp_path: Path) -> None:
    root = write_files(tmp_path, {
        "lib/hub.py": "def shared_helper(x):\n    return x\n",
        **{f"app/user_{i}.py": f"from lib.hub import shared_helper\n\n\ndef task_{i}(v):\n"
                               f"    return shared_helper(v)\n" for i in range(3)},
    })
    _, analyses, _ = analyse_repository(root)
    graph = SymbolGraph([a.tags for a in analyses], config=GraphConfig())
    store = ScriptedStore([_hit(1, "app/user_0.py", "task_0", 0.9), _hit(2, "lib/hub.py", "shared_helper", 0.8)])
    plain = code_search(store, "repo", "helper", k=2)
    assert plain.served_by == DENSE and str(plain.served_by) == "hnsw[1 shard(s), d=384]"
    reranked = code_search(store, "repo", "helper", k=2, graph=graph)
    assert reranked.served_by.stages == ("graph",) and reranked.served_by.path == "ann"
    assert str(reranked.served_by) == "hnsw[1 shard(s), d=384]+graph"
    assert "graph_ms" in reranked.timings_ms
    assert {h.metadata["symbol"] for h in reranked.hits} == {"task_0", "shared_helper"}
