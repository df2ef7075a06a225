"""`ragsvc bench route-cost`: the split's arithmetic, and a short real run against a `ragsvc serve --sample` child."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ragsvc.bench import route_cost
from ragsvc.bench.route_cost import (
    KINDS,
    RouteCost,
    RouteCostConfig,
    RouteCostResult,
    run_route_cost,
    split,
    to_markdown,
)


def _costs(**ms: float) -> dict[str, RouteCost]:
    """Kinds with 100 requests answered in 10 s at `ms` server CPU milliseconds each."""
    return {kind: RouteCost(kind, ok=100, errors=0, elapsed_s=10.0, server_cpu_s=per_op / 10.0)
            for kind, per_op in ms.items()}


def test_differences_isolate_the_embedding_and_the_write():
    costs = _costs(vector_search=1.0, search=4.25, unchanged_ingest=1.5, ingest=9.5)
    assert costs["search"].cpu_ms_per_op == pytest.approx(4.25) and costs["search"].per_s == 10.0
    assert costs["ingest"].cores == pytest.approx(0.095)
    s = split(costs)
    assert s.query_embedding_ms == 3.25 and s.document_embed_and_write_ms == 8.0 and s.ingest_in_searches == 2.24


def test_a_kind_missing_or_never_answered_gives_no_difference():
    costs = _costs(search=4.0, ingest=8.0)
    assert split(costs).query_embedding_ms is None and split(costs).document_embed_and_write_ms is None
    assert split(costs).ingest_in_searches == 2.0
    costs["search"] = RouteCost("search", ok=0, errors=7, elapsed_s=10.0, server_cpu_s=1.0)
    assert costs["search"].cpu_ms_per_op is None and split(costs).ingest_in_searches is None
    result = RouteCostResult({"clients": 2, "duration_s": 10.0}, {"git_sha": "0" * 40, "cpu": "c", "cpu_isa": ""},
                             costs)
    assert "| search | 0 | 0.0 | - | 0.10 | 7 |" in to_markdown(result)
    assert result.to_json()["kinds"]["search"]["server_cpu_ms_per_op"] is None


def test_bad_settings_are_refused():
    for kwargs, match in (({"clients": 0}, "clients"), ({"duration_s": 0.0}, "duration_s"), ({"k": 0}, "k must")):
        with pytest.raises(ValueError, match=match):
            RouteCostConfig(**kwargs)
    requests = route_cost._Requests(RouteCostConfig(clients=1), dim=4)
    with pytest.raises(ValueError, match="unknown kind 'upload'"):
        requests.next("upload", 0)
    assert sum(x * x for x in requests.vector) == pytest.approx(1.0)


@pytest.mark.slow
def test_a_short_run_against_a_real_server_answers_every_kind(tmp_path):
    announced: list[str] = []
    result = run_route_cost(RouteCostConfig(clients=2, duration_s=1.0), tmp_path / "data", on_kind=announced.append)
    assert announced == list(KINDS)
    for kind, cost in result.costs.items():
        assert cost.ok > 0 and cost.errors == 0, kind
        assert cost.cpu_ms_per_op is not None and cost.cpu_ms_per_op > 0, kind
    s = split(result.costs)
    # a search by text embeds its query and a new ingest embeds and writes its document; their counterparts do
    # neither, so each difference is positive on any machine
    assert s.query_embedding_ms is not None and s.query_embedding_ms > 0
    assert s.document_embed_and_write_ms is not None and s.document_embed_and_write_ms > 0
    out = result.to_json()
    assert out["cpu"] and len(out["git_sha"]) == 40 and set(out["kinds"]) == set(KINDS)
    json.dumps(out)


def test_the_command_refuses_bad_settings_with_one_line(tmp_path):
    from ragsvc.cli import app

    r = CliRunner().invoke(app, ["bench", "route-cost", "--clients", "0", "--json", str(tmp_path / "o.json"),
                                 "--work-dir", str(tmp_path / "w")])
    assert r.exit_code == 2 and "clients must be in 1..1024" in r.output
