"""The `pipeline` kind and the answer strategies end to end on the hand-written sample: real store, real MiniLM,
real BM25; the language model is scripted (a 135M model cannot be relied on to write or judge on cue)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragsvc.answer.prompt import INSTRUCTIONS
from ragsvc.evals.runner import RunOptions, run_suite
from ragsvc.evals.suite import load_suite
from ragsvc.llm.scripted import ScriptedGenerator

TINY = Path(__file__).resolve().parents[2] / "eval" / "data" / "tiny"

pytestmark = pytest.mark.slow

SUITE = f"""\
name = "tp"

[dataset]
path = "{TINY}"

[retrieval]
metrics = ["ndcg@10", "recall@10"]
depth = 10
chunking = "tokens"
chunk_tokens = 32
chunk_overlap = 8
baseline = "dense"

[answer]
config = "hybrid"
top_k = 3
strategies = ["none", "single", "flare"]
concurrency = 2
flare = {{ theta = 0.5, beta = 0.5, max_rounds = 2, max_tokens = 32, lookahead_tokens = 16 }}

[[configs]]
name = "exact"
backend = "exact"

[[configs]]
name = "dense"
kind = "pipeline"

[[configs]]
name = "lexical"
kind = "pipeline"
mode = "lexical"

[[configs]]
name = "hybrid"
kind = "pipeline"
mode = "hybrid"
candidates = 20

[[configs]]
name = "hybrid-hyde"
kind = "pipeline"
mode = "hybrid"
candidates = 20
hyde = {{ n = 2, template = "general", max_tokens = 16 }}
hyde_concurrency = 3
compare_to = "hybrid"

[[configs]]
name = "dense-rerank"
kind = "pipeline"
rerank = {{ name = "embedder", candidates = 5, model = "minilm" }}
compare_to = "dense"

[[configs]]
name = "hybrid-rerank-llm"
kind = "pipeline"
mode = "hybrid"
candidates = 20
rerank = {{ name = "llm", candidates = 5 }}
compare_to = "hybrid"
"""

ANSWERS = {"sourdough": "lactic acid", "espresso": "nine bars", "Perseverance": "2021", "Cremona": "Stradivari"}


def _reply(prompt) -> str:
    """HyDE passages, relevance verdicts, closed-book and passage-grounded answers, told apart by their prompt."""
    if not isinstance(prompt, str):  # chat messages: HyDE, the LLM reranker (system + user) or an answer
        if prompt[0]["role"] == "system":
            return "yes"  # every passage relevant: the LLM reranker keeps the first-stage order
        if prompt[0]["content"].startswith(INSTRUCTIONS):  # an answer over passages (ragsvc.answer.prompt)
            question = prompt[0]["content"].split("Question:")[1].split("\n")[0]
            return next((f"{a} [1]" for key, a in ANSWERS.items() if key in question), "unknown")
        return "Bees dance to show where flowers are; bread browns by the Maillard reaction."
    if prompt.startswith("Answer the question with a short answer."):
        return "I am not sure."
    question = prompt.split("Question:")[1].split("\n")[0]
    return next((f"{a} [1]" for key, a in ANSWERS.items() if key in question), "unknown")


@pytest.fixture(scope="module")
def outcome(tmp_path_factory, minilm):
    root = tmp_path_factory.mktemp("pipeline-run")
    suite_path = root / "tp.toml"
    suite_path.write_text(SUITE)
    # confidence 0.3 < theta: every FLARE look-ahead is unsure, so FLARE retrieves once more per sentence
    llm = ScriptedGenerator(_reply, confidence=0.3)
    options = RunOptions(out=root / "results" / "tp.json", cache_dir=root / "cache", llm=llm)
    first = run_suite(load_suite(suite_path), embedder=minilm, options=options)
    again = run_suite(load_suite(suite_path), embedder=minilm,
                      options=RunOptions(out=root / "results" / "tp2.json", cache_dir=root / "cache", llm=llm))
    return first, again


def _configs(result) -> dict:
    return {c["name"]: c for c in result.results.to_json()["configs"]}


def test_stages_against_their_oracles(outcome):
    first, _ = outcome
    by_name = _configs(first)
    exact, dense = by_name["exact"], by_name["dense"]
    # the pipeline's dense stage searches the corpus collection exactly: the same per-query scores as `exact`
    assert dense["per_query"]["ndcg@10"] == pytest.approx(exact["per_query"]["ndcg@10"])
    # rescoring a shortlist with the embedder that ranked it keeps the ranking
    assert by_name["dense-rerank"]["per_query"]["ndcg@10"] == pytest.approx(dense["per_query"]["ndcg@10"])
    # an LLM that finds every passage relevant ties them all, and ties keep the first-stage order
    hybrid = by_name["hybrid"]
    assert by_name["hybrid-rerank-llm"]["per_query"]["ndcg@10"] == pytest.approx(hybrid["per_query"]["ndcg@10"])
    assert by_name["lexical"]["metrics"]["ndcg@10"] >= 0.6  # BM25 on a sample written with shared words
    assert hybrid["metrics"]["ndcg@10"] >= 0.6
    assert by_name["lexical"]["served_by"] == {"lexical": 14}
    assert all(k.startswith("dense + lexical + fuse (exact") for k in hybrid["served_by"])


def test_stage_report_records_what_each_stage_cost(outcome):
    first, again = outcome
    by_name = _configs(first)
    hyde = by_name["hybrid-hyde"]
    assert set(hyde["stages"]["latency_ms"]) >= {"hyde_ms", "dense_ms", "lexical_ms", "fuse_ms", "total_ms"}
    assert hyde["stages"]["hyde"]["completion_tokens_mean"] == 2 * 13  # n passages of the 13-word reply
    assert hyde["stages"]["hyde"]["prefetch"]["queries_at_once"] == 3 and hyde["prefetch_s"] > 0
    assert hyde["stages"]["hyde"]["model"] == "scripted"
    assert first.results.llm == "scripted"
    rerank = by_name["dense-rerank"]["stages"]["rerank"]
    assert rerank["counts"]["embedded"] > 0 and "embed_query_ms" in rerank["timings_ms"]
    # a re-run finds every shortlisted chunk's vector in the store's duckdb cache
    warm = _configs(again)["dense-rerank"]["stages"]["rerank"]["counts"]
    assert warm["embedded"] == 0 and warm["cache_hits"] == 14 * 5
    report = first.report_path.read_text()
    assert "## What each stage adds" in report and "| hybrid-hyde | hybrid |" in report
    assert "## Stage latency per query" in report and "amortised" in report


def test_answer_strategies_compared_on_the_same_questions(outcome):
    first, _ = outcome
    answer = first.results.answer
    assert answer["config"] == "hybrid" and answer["num_examples"] == 4
    none, single, flare = (answer["strategies"][s] for s in ("none", "single", "flare"))
    assert none["metrics"]["em"] == 0.0 and none["retrievals_mean"] == 0 and none["metrics"]["support_recall"] is None
    assert single["metrics"]["em"] == 1.0 and single["metrics"]["match"] == 1.0 and single["retrievals_mean"] == 1
    assert flare["metrics"]["em"] == 1.0 and flare["retrievals_mean"] == 2  # the unsure sentence retrieved again
    assert 0 < single["metrics"]["support_recall"] <= flare["metrics"]["support_recall"] <= 1
    assert answer["paired"]["single vs none"]["em"]["delta"] == 1.0
    assert answer["paired"]["flare vs single"]["em"] == {"delta": 0.0, "ci": [0.0, 0.0], "p": 1.0}
    scored = {r["id"]: r["scored"] for r in single["per_example"]}
    assert scored["q10"] == "2021"  # citation markers removed before scoring
    report = first.report_path.read_text()
    assert "## Answer strategies" in report and "| flare |" in report and "| flare vs single |" in report
    saved = json.loads(first.results_path.read_text())
    assert saved["answer"]["strategies"]["flare"]["per_example"][0]["retrievals"] == 2
