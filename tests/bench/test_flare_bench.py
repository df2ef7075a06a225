"""bench flare: calls pair up only while both runs sent the same prompt; a smoke run with the real engine."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from ragsvc.answer.types import Answer, GenerationRound
from ragsvc.bench.flare import FlareBenchConfig, FlareBenchResult, pair_calls, run_flare_bench, sample_collection

BASELINE = Path(__file__).resolve().parents[2] / "eval" / "baselines" / "flare-prefix-cache.json"


def _answer(*calls: tuple[str, int, int, float]) -> Answer:
    gens = [GenerationRound(round=i + 1, kind=kind, prompt_tokens=p, cached_tokens=c, completion_tokens=8,
                            ttft_ms=t, total_ms=t + 50, min_prob=0.5, text="x") for i, (kind, p, c, t) in
            enumerate(calls)]
    return Answer("x", [], [], [], gens, {"total_ms": 1.0}, "stop")


def test_calls_pair_until_the_runs_diverge():
    warm = _answer(("lookahead", 800, 0, 900.0), ("lookahead", 820, 800, 40.0), ("regenerate", 900, 816, 300.0))
    cold = _answer(("lookahead", 800, 0, 910.0), ("lookahead", 820, 0, 950.0), ("regenerate", 950, 0, 990.0))
    pairs, mismatched = pair_calls([warm], [cold])
    assert [(p.index, p.prompt_tokens, p.warm_ttft_ms, p.cold_ttft_ms) for p in pairs] == [
        (0, 800, 900.0, 910.0), (1, 820, 40.0, 950.0)]
    assert mismatched == 1


def test_committed_baseline_round_trips_byte_for_byte():
    text = BASELINE.read_text()
    result = FlareBenchResult.from_json(json.loads(text))
    assert result.calls and result.cpu and result.git_sha
    assert json.dumps(result.to_json(), indent=2) == text


@pytest.mark.slow
def test_smoke_run_with_the_real_engine(tmp_path, minilm):
    from ragsvc.retrieval.vector_store import VectorStore
    from tests.llm.conftest import engine_config

    store = VectorStore.open(tmp_path / "data", embedder=minilm)
    try:
        collection = sample_collection(store)
        cfg = FlareBenchConfig(questions=("How does paged attention store the KV cache?",), max_rounds=2,
                               max_tokens=128, engine=replace(engine_config(), dtype="auto", weights="q4-all"))
        # the budget covers every call; SmolLM2 as it ships (Q4_1) on the q4 kernels, as the real simulation
        # tests run it: this checks the benchmark's cache accounting, not the model's numerics
        result = run_flare_bench(store, collection, cfg)
    finally:
        store.close()
    assert result.calls and result.calls[0].cached_tokens == 0  # the first call of an answer is cold
    later = [c for c in result.calls if c.index > 0]
    assert later and all(c.cached_tokens > 0 for c in later)
    assert 0 < result.cached_share_rounds_2plus <= 1
    assert set(result.seconds_per_answer) == {"prefix_cache", "no_cache"} and result.cpu
