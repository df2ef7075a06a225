"""`ragsvc bench filter`: both spellings of a large $in run on one real catalog and select the same chunks."""

from __future__ import annotations

from ragsvc.bench.filter_in import run_filter_bench


def test_set_and_or_membership_agree_and_are_both_timed(tmp_path):
    result = run_filter_bench(tmp_path, num_chunks=300, num_values=400, set_repeats=2, or_repeats=1)
    assert result.matched == 150  # t0, t2, ... t298 exist; t300 ... t798 do not
    assert len(result.set_ms) == 2 and len(result.or_ms) == 1
    out = result.to_json()
    assert out["speedup"] > 0 and out["git_sha"] and out["cpu"]
