"""`ragsvc bench quant-quality` on the real SmolLM2, kept small: every format scored, the reference first."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest

from ragsvc.bench.quant_quality import PROMPTS, fixed_text, run_quality

SMOLLM2_CACHE = str(Path(tempfile.gettempdir()) / "ragsvc-test-models")


def test_fixed_text_and_prompts_are_fixed() -> None:
    assert len(PROMPTS) == 20 and len(set(PROMPTS)) == 20
    assert fixed_text() == fixed_text() and len(fixed_text()) > 5000


def test_bf16_must_come_first() -> None:
    with pytest.raises(ValueError, match="first format must be bf16"):
        run_quality(model="smollm2", weights=("q4", "bf16"))


@pytest.mark.slow
def test_quality_of_every_format_on_smollm2() -> None:
    result = run_quality(model="smollm2", weights=("bf16", "int8", "q4"), cache_dir=SMOLLM2_CACHE,
                         text_tokens=128, num_prompts=3, max_tokens=6)
    assert [f.weights for f in result.formats] == ["bf16", "int8", "q4"]
    bf16, *quantised = result.formats
    assert bf16.agreement is None and math.isfinite(bf16.perplexity) and bf16.perplexity > 1
    for f in quantised:
        assert f.agreement is not None and 0.5 <= f.agreement <= 1.0  # a broken kernel agrees on ~0 tokens
        assert f.first_divergence is not None and len(f.first_divergence) == 3
        assert abs(math.log(f.perplexity / bf16.perplexity)) < 0.2  # within ~20% of the model's own
    assert result.to_json()["formats"][2]["weights"] == "q4"


def test_results_record_no_machine_path() -> None:
    """A results file is committed as a baseline: the model's folder on the machine that ran it stays out."""
    from ragsvc.bench.quant_quality import QualityResult

    doc = QualityResult(model="/home/someone/models/qwen.gguf", dtype="auto", text_tokens=8, num_prompts=1,
                        max_tokens=4).to_json()
    assert doc["model"] == "<outside the repository>/qwen.gguf"
    alias = QualityResult(model="smollm2", dtype="auto", text_tokens=8, num_prompts=1, max_tokens=4)
    assert alias.to_json()["model"] == "smollm2"
