"""LLMReranker end to end on the real SmolLM2 in-process engine (here because the engine fixtures are):
the batched judgements equal one-by-one ones, and the scores are probabilities read from real logprobs.
No claim about the 135M model's judgement quality; tests/retrieval/test_rerank.py checks the ranking logic."""

from __future__ import annotations

import pytest

from ragsvc.retrieval.rerank import LLMReranker, judgement_prompt, yes_probability
from ragsvc.types import ChunkId, DocumentId, Hit

pytestmark = pytest.mark.slow

QUERY = "What is the capital of France?"
PASSAGES = [
    "Bananas are a yellow fruit rich in potassium.",
    "Paris is the capital and largest city of France.",
    "The Eiffel Tower stands in Paris, on the Champ de Mars.",
]


def test_llm_reranker_end_to_end(in_process):
    hits = [Hit(ChunkId(i + 1), DocumentId("d"), text, 0.9 - i / 10) for i, text in enumerate(PASSAGES)]
    result = LLMReranker(in_process, top_logprobs=5).rerank(QUERY, hits)

    assert sorted(h.chunk_id for h in result.hits) == [1, 2, 3]
    assert all(0.0 <= h.score <= 1.0 for h in result.hits)
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)
    assert result.counts["judged"] == 3 and result.timings_ms["judge_ms"] > 0

    # the batch judged each passage as a lone request would have (fp32: batch-invariant greedy logits)
    one_by_one = {}
    for hit in hits:
        gen = in_process.generate(judgement_prompt(QUERY, hit.text), max_tokens=1, logprobs=True, top_logprobs=5)
        assert gen.tokens and len(gen.tokens[0].top) == 5
        p = yes_probability(gen)
        one_by_one[hit.chunk_id] = 0.5 if p is None else p
    assert {h.chunk_id: h.score for h in result.hits} == pytest.approx(one_by_one, abs=1e-4)
