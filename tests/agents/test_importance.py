"""Importance as an expectation over score tokens, from scripted logprobs (incl. "10" split as "1" + "0"),
asynchronous scoring, and one real SmolLM2 call (slow)."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest

from ragsvc.agents.importance import (
    ImportanceOptions,
    ImportanceScorer,
    expected_score,
    parse_rating,
    score_token_probs,
    ten_share,
)
from ragsvc.agents.importance_worker import ImportanceWorker, score_pending
from ragsvc.agents.memory import MemoryStream
from ragsvc.errors import InvalidInput
from ragsvc.llm.generator import Generation, TokenLogprob, Usage
from ragsvc.llm.scripted import ScriptedGenerator

LN = math.log
MODEL_CACHE = Path(tempfile.gettempdir()) / "ragsvc-test-models"  # shared with tests/llm: converted once


def _gen(*positions: dict[str, float], text: str | None = None) -> Generation:
    """A generation whose i-th token is the most likely of positions[i] (token -> probability)."""
    tokens = []
    for probs in positions:
        top = tuple(sorted(((t, LN(p)) for t, p in probs.items()), key=lambda x: -x[1]))
        tokens.append(TokenLogprob(token=top[0][0], logprob=top[0][1], top=top))
    return Generation(text="".join(t.token for t in tokens) if text is None else text, tokens=tuple(tokens),
                      finish_reason="length", usage=Usage(prompt_tokens=10, completion_tokens=len(tokens)))


def test_expectation_is_the_probability_weighted_mean_of_the_scores():
    # p(3) = 0.5, p(" 7") + p("7") = 0.3, p(9) = 0.1, and 0.1 on a non-score token, renormalised over 0.9
    first = [("3", LN(0.5)), (" 7", LN(0.2)), ("7", LN(0.1)), ("9", LN(0.1)), ("\n", LN(0.1))]
    expected, dist, mass = expected_score(first, ten_share_of_one=0.0)
    assert mass == pytest.approx(0.9)
    assert expected == pytest.approx((3 * 0.5 + 7 * 0.3 + 9 * 0.1) / 0.9)
    assert dist[2] == pytest.approx(0.5 / 0.9) and sum(dist) == pytest.approx(1.0)


def test_the_mass_on_one_is_split_between_1_and_10_by_the_next_token():
    # after "1": p("0") = 0.6, another digit 0.1 (11-19, dropped), anything else 0.3 -> 10 gets 0.6 / 0.9
    share = ten_share([("0", LN(0.6)), ("\n", LN(0.2)), ("5", LN(0.1)), (".", LN(0.1))])
    assert share == pytest.approx(0.6 / 0.9)
    first = [("1", LN(0.6)), ("5", LN(0.4))]
    expected, dist, _ = expected_score(first, ten_share_of_one=share)
    p10, p1 = 0.6 * share, 0.6 * (1 - share)
    assert dist[9] == pytest.approx(p10) and dist[0] == pytest.approx(p1)
    assert expected == pytest.approx(10 * p10 + 1 * p1 + 5 * 0.4)
    # a vocabulary with a single "10" token needs no split
    assert expected_score([("10", LN(0.5)), ("1", LN(0.5))], ten_share_of_one=0.9, has_ten_token=True)[0] == 5.5


def test_score_tokens_ignore_non_scores():
    assert score_token_probs([("0", 0.0), ("11", 0.0), ("07", 0.0), ("abc", 0.0), ("4", LN(0.5))]) == {
        4: pytest.approx(0.5)}
    assert expected_score([("\n", 0.0)], ten_share_of_one=0.0) == (5.5, tuple([0.1] * 10), 0.0)
    assert [parse_rating(t) for t in ("10", " 7.", "Rating: 3", "0", "12", "none")] == [10, 7, 3, None, None, None]


def test_scorer_reads_ten_from_the_greedy_reply_or_asks_once_more():
    greedy_ten = _gen({"1": 0.7, "8": 0.3}, {"0": 0.9, "\n": 0.1})  # wrote "10"
    greedy_eight = _gen({"8": 0.6, "1": 0.4}, {"\n": 1.0})  # wrote "8"; "1" needs a follow-up
    follow_up = _gen({"0": 0.25, "\n": 0.75})
    script = ScriptedGenerator([greedy_ten, greedy_eight, follow_up])
    first, second = ImportanceScorer(script).score_many(["my house burned down", "got a new job"])
    assert first.written == 10 and second.written == 8
    assert first.expected == pytest.approx(0.7 * (0.9 * 10 + 0.1 * 1) + 0.3 * 8)
    assert second.expected == pytest.approx(0.6 * 8 + 0.4 * (0.25 * 10 + 0.75 * 1))
    follow_prompt, follow_kwargs = script.calls[2]
    assert follow_prompt[-1] == {"role": "assistant", "content": "Rating: 1"}
    assert follow_kwargs["max_tokens"] == 1 and follow_kwargs["top_logprobs"] == 20


def test_small_mass_on_one_skips_the_follow_up_and_sampling_is_separate():
    script = ScriptedGenerator([_gen({"4": 0.995, "1": 0.005}), "6"])
    scorer = ImportanceScorer(script, options=ImportanceOptions(ten_check_min_p=0.01, sample_temperature=1.0))
    score = scorer.score("bought milk")
    assert score.written == 4 and score.sampled == 6
    assert score.expected == pytest.approx(0.995 * 4 + 0.005 * 1)
    assert script.calls[1][1]["temperature"] == 1.0 and len(script.calls) == 2


def test_a_generator_without_logprobs_and_bad_options_are_refused():
    with pytest.raises(InvalidInput, match="logprobs"):
        ImportanceScorer(ScriptedGenerator([Generation("5", (), "stop", Usage(1, 1))])).score("x")
    with pytest.raises(InvalidInput, match="empty"):
        ImportanceScorer(ScriptedGenerator([])).score_many(["  "])
    with pytest.raises(InvalidInput):
        ImportanceOptions(ten_check_min_p=2.0)


def test_pending_memories_are_scored_in_the_background(catalog, embedder):
    stream = MemoryStream(catalog.memory_tables(), "mei", embedder=embedder)
    scripted = ScriptedGenerator(lambda prompt: _gen({"7": 1.0}) if "party" in str(prompt) else _gen({"2": 1.0}))
    worker = ImportanceWorker(stream, ImportanceScorer(scripted), batch_size=2)
    try:
        ids = [stream.add("observation", t, at_h=1.0).id for t in ("a party tonight", "made tea", "swept")]
        assert all(m.importance is None for m in stream.get(ids))  # stored before anything was scored
        worker.drain(timeout_s=30)
        assert [m.importance for m in stream.get(ids)] == [7.0, 2.0, 2.0]
        assert worker.num_scored == 3 and worker.last_error is None
    finally:
        worker.close()
    assert score_pending(stream, ImportanceScorer(scripted)) == 0


def test_a_failing_model_leaves_memories_pending(catalog, embedder):
    stream = MemoryStream(catalog.memory_tables(), "tomas", embedder=embedder)

    def down(prompt):
        raise ConnectionError("model server down")

    worker = ImportanceWorker(stream, ImportanceScorer(ScriptedGenerator(down)))
    try:
        memory = stream.add("observation", "the oven broke", at_h=1.0)
        worker.drain(timeout_s=30)
        assert isinstance(worker.last_error, ConnectionError)
        assert stream.get([memory.id])[0].importance is None
    finally:
        worker.close()


@pytest.mark.slow
def test_smollm2_rates_one_observation():
    from ragsvc.llm.in_process import InProcessGenerator
    from ragsvc.serving.config import EngineConfig

    config = EngineConfig(model="smollm2", cache_dir=str(MODEL_CACHE), num_kv_blocks=64)
    with InProcessGenerator.from_config(config) as gen:
        score = ImportanceScorer(gen).score("My mother passed away in her sleep last night.")
    assert 1.0 <= score.expected <= 10.0
    assert sum(score.distribution) == pytest.approx(1.0)
    assert score.mass > 0.5  # the primed reply puts most of its mass on a score token
