"""How a tick's calls reach the model: priming only where a batch's shared prefix is new, the per-phase profile
(batch sizes, tokens, critical time) in both modes, and the bench's per-phase summary of a trace."""

from __future__ import annotations

from ragsvc.agents.sim_calls import PRIME_MIN_CHARS, PhaseCaller, common_length, prompt_key, shared_prefix
from ragsvc.bench.agents import phase_profile
from ragsvc.llm.scripted import ScriptedGenerator

PREAMBLE = "This is a simulation of a village. " * 40  # far more than PRIME_MIN_CHARS
OTHER = "Rate how much each memory matters. " * 40


def _chat(system: str, user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _primes(gen: ScriptedGenerator) -> list[str]:
    """Priming calls: one token, no other option (a phase's own calls pass stop too)."""
    return [prompt_key(p) for p, kw in gen.calls if set(kw) == {"max_tokens", "seed"} and kw["max_tokens"] == 1]


def test_prefix_helpers():
    assert shared_prefix(["abcx", "abdy", "abc"]) == "ab" and shared_prefix(["same"]) == "same"
    assert common_length("abcdef", "abcxyz") == 3 and common_length("", "abc") == 0
    assert common_length("abc", "abc") == 3
    assert prompt_key(_chat("s", "u")).startswith(prompt_key([{"role": "system", "content": "s"}]))


def test_a_batch_is_primed_only_when_its_shared_prefix_is_new():
    gen = ScriptedGenerator(lambda p: "ok")
    caller = PhaseCaller(gen, sequential=False, max_calls_per_agent=10, max_tokens_per_agent=1000, seed=0,
                         prime=True)
    first = [(a, _chat(PREAMBLE + f"You are {a}.", "plan your day")) for a in ("Ada", "Bo", "Cy")]
    caller.call("plan", first, max_tokens=8)
    assert _primes(gen) == [prompt_key(first[0][1])]  # new preamble: primed with the first prompt
    again = [(a, _chat(PREAMBLE + f"You are {a}.", "continue or react?")) for a in ("Ada", "Bo")]
    caller.call("decide", again, max_tokens=8)
    assert len(_primes(gen)) == 1  # the same preamble: cached by the first batch, not primed again
    rated = [("", OTHER + f"Memory {i}: something happened.") for i in range(3)]
    caller.call("importance", rated, max_tokens=1, charged=False)
    assert len(_primes(gen)) == 2  # another long shared prefix: primed
    short = [("", f"{x} short prompt") for x in ("a", "b")]
    caller.call("importance", short, max_tokens=1, charged=False)
    assert len(_primes(gen)) == 2  # nothing shared worth a forward pass
    assert caller.usage.primes == 2 and caller.usage.calls == 10
    assert caller.usage.sizes_by_phase == {"plan": [3], "decide": [2], "importance": [3, 2]}


def test_sequential_profile_keeps_the_longest_call_and_tokens_per_phase():
    gen = ScriptedGenerator(lambda p: "one two three")
    caller = PhaseCaller(gen, sequential=True, max_calls_per_agent=10, max_tokens_per_agent=1000, seed=0,
                         prime=True)
    caller.call("plan", [(a, _chat(PREAMBLE, a)) for a in ("Ada", "Bo", "Cy")], max_tokens=8)
    u = caller.usage
    assert u.primes == 0 and u.batches == 3 and u.sizes_by_phase == {"plan": [3]}
    assert 0 <= u.critical_ms_by_phase["plan"] <= u.ms_by_phase["plan"]
    assert u.tokens_by_phase["plan"]["completion"] == 9 and u.tokens_by_phase["plan"]["prompt"] == u.prompt_tokens


def test_phase_profile_sums_a_trace_per_phase():
    trace = [
        {"batch_sizes_by_phase": {"plan": [5], "decide": [2]},
         "tokens_by_phase": {"plan": {"prompt": 100, "cached": 60, "completion": 40},
                             "decide": {"prompt": 20, "cached": 10, "completion": 4}},
         "model_ms_by_phase": {"plan": 2000.0, "decide": 500.0}, "critical_ms_by_phase": {"plan": 800.0,
                                                                                           "decide": 300.0}},
        {"batch_sizes_by_phase": {"decide": [1]}, "tokens_by_phase": {"decide": {"prompt": 10, "cached": 5,
                                                                                 "completion": 2}},
         "model_ms_by_phase": {"decide": 250.0}, "critical_ms_by_phase": {"decide": 250.0}},
    ]
    profile = phase_profile(trace)
    assert profile["plan"] == {"calls": 5, "batches": 1, "prompt_tokens": 100, "cached_tokens": 60,
                               "completion_tokens": 40, "model_s": 2.0, "critical_s": 0.8, "mean_batch": 5.0}
    assert profile["decide"]["calls"] == 3 and profile["decide"]["batches"] == 2
    assert profile["decide"]["mean_batch"] == 1.5 and profile["decide"]["critical_s"] == 0.55
    assert PRIME_MIN_CHARS > 0
