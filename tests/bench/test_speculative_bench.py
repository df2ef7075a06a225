"""bench speculative: its answer-style prompts, its refusals, and a smoke run with the real SmolLM2."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from ragsvc.bench.speculative import DATASET, SpeculativeBenchConfig, run_speculative_bench
from ragsvc.errors import InvalidInput

SMOLLM2_CACHE = str(Path(tempfile.gettempdir()) / "ragsvc-test-models")


def _hotpot(root: Path) -> Path:
    """A two-question folder shaped like HotpotQA dev-100 (BEIR layout)."""
    folder = root / DATASET
    (folder / "qrels").mkdir(parents=True)
    docs = {"d1": ("Ada Lovelace", "Ada Lovelace wrote the first published program for the Analytical Engine."),
            "d2": ("Analytical Engine", "The Analytical Engine was a mechanical computer designed by Babbage."),
            "d3": ("Grace Hopper", "Grace Hopper wrote the first compiler, A-0, in 1952.")}
    (folder / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": k, "title": t, "text": x}) + "\n" for k, (t, x) in docs.items()))
    (folder / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "Who wrote the first program for Babbage's engine?"}) + "\n"
        + json.dumps({"_id": "q2", "text": "Who wrote the first compiler?"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t1\nq2\td3\t1\n")
    return root


def test_bad_settings_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="num_prompts"):
        SpeculativeBenchConfig(data_root=tmp_path, num_prompts=0)
    with pytest.raises(ValueError, match="concurrency"):
        SpeculativeBenchConfig(data_root=tmp_path, concurrency=0)
    with pytest.raises(InvalidInput, match="--data-root"):
        run_speculative_bench(SpeculativeBenchConfig(data_root=tmp_path, cache_dir=SMOLLM2_CACHE, num_prompts=1))


@pytest.mark.slow
def test_smoke_run_with_the_real_engine(tmp_path) -> None:
    cfg = SpeculativeBenchConfig(data_root=_hotpot(tmp_path), num_prompts=2, max_tokens=24, dtype="float32",
                                 cache_dir=SMOLLM2_CACHE, concurrency=2)
    doc = run_speculative_bench(cfg).to_json()
    assert doc["identical_outputs"] == 2 and doc["concurrent"]["identical_outputs"] == 2
    assert [p["prompt_tokens"] > 60 for p in doc["per_prompt"]] == [True, True]
    assert doc["plain"]["output_tokens"] == doc["prompt_lookup"]["output_tokens"] > 0
    assert doc["config"]["data_root"] == tmp_path.name and "cache_dir" not in doc["config"]
    assert doc["cpu_model"] and doc["git_sha"]
