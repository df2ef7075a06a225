"""`ragsvc bench chat`: the per-mode summary computed by hand, bad configs refused, and one tiny real run (two
fresh servers with SmolLM2 in-process, one session, one message) that yields a complete, path-free JSON."""

from __future__ import annotations

import json

import pytest

from ragsvc.bench.chat import ChatBenchConfig, ModeResult, Timed, run_chat_bench


def test_mode_summary_by_hand():
    timed = [Timed(ttft_ms=t, total_ms=10 * t, prompt_tokens=100, cached_tokens=c, completion_tokens=8)
             for t, c in ((10.0, 0), (20.0, 50), (30.0, 100))]
    m = ModeResult.of("concurrent", timed, wall_s=6.0)
    assert m.messages == 3 and m.messages_per_min == 30.0
    assert m.reply_p50_ms == 200.0 and m.ttft_p50_ms == 20.0 and m.ttft_p95_ms == 29.0  # inclusive quantiles
    assert (m.prompt_tokens, m.cached_prompt_tokens, m.cached_share, m.completion_tokens) == (300, 150, 0.5, 24)


@pytest.mark.parametrize("bad", [{"sessions": 0}, {"messages": 9}, {"max_tokens": 0}])
def test_bad_configs_are_refused(bad):
    with pytest.raises(ValueError, match="sessions must be"):
        ChatBenchConfig(**bad)


@pytest.mark.slow
def test_a_tiny_run_reports_both_modes(tmp_path):
    from tests.llm.conftest import engine_config

    result = run_chat_bench(ChatBenchConfig(sessions=2, messages=1, max_tokens=4, engine=engine_config()),
                            work_dir=tmp_path)
    data = result.to_json()
    assert [m["mode"] for m in data["modes"]] == ["concurrent", "sequential"]
    assert all(m["messages"] == 2 and m["completion_tokens"] >= 2 and m["prompt_tokens"] > 100 for m in data["modes"])
    assert data["speedup"] > 0 and data["git_sha"] and data["cpu"]
    assert str(tmp_path) not in json.dumps(data)
