"""End to end on the hand-written sample: the real store, real MiniLM, real index backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragsvc.evals import runner as runner_module
from ragsvc.evals.answer_run import SKIPPED_NO_GENERATOR
from ragsvc.evals.answer_stage import text_generator
from ragsvc.evals.results import load_results
from ragsvc.evals.runner import RunOptions, run_suite
from ragsvc.evals.suite import load_suite
from ragsvc.llm.scripted import ScriptedGenerator
from ragsvc.retrieval.vector_store import VectorStore

TINY_SUITE = Path(__file__).resolve().parents[2] / "eval" / "suites" / "tiny.toml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One store for the module: the second test finds the sample's embeddings cached, as a re-run would."""
    return tmp_path_factory.mktemp("eval-cache")


def _answer_script(messages: list[dict[str, str]]) -> str:
    prompt = messages[-1]["content"]
    if prompt.startswith("Answer the question"):
        return "Antonio Stradivari [1]" if "Cremona" in prompt.split("Question:")[-1] else "unknown [1]"
    return "YES"


def test_tiny_suite_end_to_end(tmp_path, minilm, cache_dir):
    out = tmp_path / "results" / "tiny.json"
    gen = text_generator(ScriptedGenerator(_answer_script))
    outcome = run_suite(load_suite(TINY_SUITE), embedder=minilm,
                        options=RunOptions(out=out, cache_dir=cache_dir, generator=gen))
    data = json.loads(out.read_text())
    assert load_results(out).to_json() == data
    assert outcome.results.to_json() == data
    assert {"suite", "dataset", "configs", "git_sha"} <= set(data)
    assert data["embed_path"] == "sentence-transformers encode"  # the embedder given: plain float32 encode
    assert [c["name"] for c in data["configs"]] == ["exact", "hnsw", "faiss-ivf", "adaptive-64"]
    by_name = {c["name"]: c for c in data["configs"]}
    for c in data["configs"]:
        assert set(c["metrics"]) == {"ndcg@10", "recall@1", "recall@10", "mrr@10"}
        assert set(c["latency_ms"]) >= {"p50", "p95"} and c["latency_ms"]["p50"] > 0
        assert c["build_s"] > 0 and c["index_bytes"] > 0 and c["num_queries"] == 14
        assert set(c["per_query"]["ndcg@10"]) == {f"q{i:02d}" for i in range(1, 15)}
    # The sample is easy: each query's best document is the top hit for nearly every query.
    assert by_name["exact"]["metrics"]["recall@1"] >= 0.6
    assert by_name["exact"]["metrics"]["ndcg@10"] >= 0.8
    # On 30 documents the approximate indexes must agree with the exact one (the oracle).
    assert by_name["hnsw"]["metrics"]["ndcg@10"] == pytest.approx(by_name["exact"]["metrics"]["ndcg@10"], abs=1e-6)
    # served_by counts queries by the one-line form of ServedBy: what each config really measured.
    assert by_name["hnsw"]["served_by"] == {"hnsw[1 shard(s), d=384]": 14}
    assert all(key.startswith("exact(untrained: ") for key in by_name["adaptive-64"]["served_by"])
    answer = data["answer"]
    assert answer["num_examples"] == 4 and answer["metrics"]["em"] == 0.25
    report = outcome.report_path.read_text()
    assert "| adaptive-64 |" in report and "## Answer stage" in report
    assert (out.parent / "tiny-metrics.png").is_file() and (out.parent / "tiny-tradeoff.png").is_file()
    assert not list((cache_dir / "checkpoints").rglob("*.json"))  # cleared after a complete run
    store = VectorStore.open(cache_dir / "store", embedder=minilm)
    try:  # only the corpus collection (the embedding cache) outlives the run
        names = [c.name for c in store.list_collections()]
        assert len(names) == 1 and names[0].startswith("eval-tiny-corpus-")
    finally:
        store.close()


def test_interrupted_run_resumes_and_writes_nothing_half_done(tmp_path, minilm, cache_dir, monkeypatch):
    suite = load_suite(TINY_SUITE)
    results_dir = tmp_path / "results"
    options = RunOptions(results_dir=results_dir, cache_dir=cache_dir)
    real = runner_module.evaluate_config

    def interrupt_on_hnsw(config, *args, **kwargs):
        if config.name == "hnsw":
            raise KeyboardInterrupt
        return real(config, *args, **kwargs)

    monkeypatch.setattr(runner_module, "evaluate_config", interrupt_on_hnsw)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, embedder=minilm, options=options)
    assert not results_dir.exists() or not any(results_dir.iterdir())
    assert len(list((cache_dir / "checkpoints" / "tiny").glob("exact-*.json"))) == 1

    monkeypatch.setattr(runner_module, "evaluate_config", real)
    outcome = run_suite(suite, embedder=minilm, options=options)
    assert outcome.resumed == ("exact",)
    assert [c.name for c in outcome.results.configs] == ["exact", "hnsw", "faiss-ivf", "adaptive-64"]
    assert outcome.results.answer == {"skipped": SKIPPED_NO_GENERATOR}
    assert sorted(p.suffix for p in results_dir.iterdir()) == [".json", ".md", ".png", ".png"]
    store = VectorStore.open(cache_dir / "store", embedder=minilm)
    try:  # the collection the interrupted run built for `exact` is gone too
        assert [c.name for c in store.list_collections() if c.name.startswith("eval-tiny-c-")] == []
    finally:
        store.close()
