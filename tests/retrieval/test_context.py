"""Context packing: near-duplicates, the token budget under a real tokenizer, lost-in-the-middle order,
citations back to chunk spans, and cited numbers in answers."""

import re

import pytest

from ragsvc.errors import InvalidInput
from ragsvc.retrieval.context import (
    approx_tokens,
    cited,
    cited_numbers,
    dedupe,
    jaccard,
    lost_in_the_middle,
    pack_context,
    shingles,
)
from ragsvc.types import ChunkId, DocumentId, Hit


def hit(cid: int, text: str, score: float | None = None) -> Hit:
    return Hit(ChunkId(cid), DocumentId(f"doc{cid % 3}"), text, 1.0 - cid / 100 if score is None else score)


@pytest.fixture(scope="module")
def minilm_tokens():
    """len() of MiniLM's real WordPiece tokenizer, loaded from the package folder (no model weights)."""
    from transformers import AutoTokenizer

    from ragsvc.embed.embedder import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_path("minilm")))
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _sample_passages() -> list[str]:
    from importlib.resources import files

    text = (files("ragsvc") / "sample" / "paged-attention.md").read_text(encoding="utf-8")
    text += (files("ragsvc") / "sample" / "hnsw.md").read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if len(p.split()) >= 20]
    return paragraphs[:12]


def test_approx_tokens_is_the_larger_of_words_and_chars_over_4():
    assert approx_tokens("") == 0
    assert approx_tokens("a b c d e") == 5  # 9 chars -> 3, 5 words
    assert approx_tokens("internationalisation") == 5  # 20 chars / 4


def test_lost_in_the_middle_order():
    assert lost_in_the_middle(range(5)) == [0, 2, 4, 3, 1]
    assert lost_in_the_middle(range(4)) == [0, 2, 3, 1]
    assert lost_in_the_middle(range(1)) == [0] and lost_in_the_middle([]) == []


def test_packing_orders_numbers_and_cites_in_reading_order():
    hits = [hit(i, f"passage number {i} talks about topic {i * 7} only") for i in range(1, 6)]
    packed = pack_context(hits, max_tokens=1000)
    assert [c.rank for c in packed.citations] == [1, 3, 5, 4, 2]
    assert [c.number for c in packed.citations] == [1, 2, 3, 4, 5]
    assert packed.text.startswith("[1] passage number 1 ") and packed.text.endswith("[5] " + hits[1].text)
    assert packed.text == "\n\n".join(f"[{c.number}] {c.text}" for c in packed.citations)
    for c in packed.citations:
        source = hits[c.rank - 1]
        assert (c.chunk_id, c.document_id, c.score) == (source.chunk_id, source.document_id, source.score)
        assert source.text[c.start_char : c.end_char] == c.text and not c.truncated
    assert packed.num_tokens == approx_tokens(packed.text) and packed.duplicates == packed.over_budget == ()


def test_near_duplicates_keep_the_better_ranked():
    base = "the scheduler admits waiting requests while free kv blocks remain and preempts the newest otherwise"
    hits = [
        hit(1, base),
        hit(2, "an unrelated passage about hnsw graphs and their entry points at the top layer"),
        hit(3, base.replace("newest", "youngest")),  # one word changed: 3 of 13 shingles differ
        hit(4, base + " today"),  # one word appended: 13 of 14 shingles shared
        hit(1, "same chunk id again"),
        hit(5, "Short."),
        hit(6, "short"),
    ]
    assert jaccard(shingles(hits[0].text), shingles(hits[3].text)) == pytest.approx(13 / 14)
    kept, removed = dedupe(hits, threshold=0.8)
    near = jaccard(shingles(hits[0].text), shingles(hits[2].text))
    assert near < 0.8  # a changed word breaks three shingles: kept at 0.8 ...
    assert [h.chunk_id for h in kept] == [1, 2, 3, 5]
    assert [h.chunk_id for h in removed] == [4, 1, 6]
    kept, _ = dedupe(hits, threshold=near)  # ... removed at its own similarity
    assert [h.chunk_id for h in kept] == [1, 2, 5]
    packed = pack_context(hits, max_tokens=1000)
    assert packed.duplicates == (4, 1, 6)


@pytest.mark.parametrize("budget", [40, 90, 200, 400])
def test_budget_respected_with_a_real_tokenizer(minilm_tokens, budget):
    passages = _sample_passages()
    hits = [hit(i, text) for i, text in enumerate(passages, start=1)]
    packed = pack_context(hits, max_tokens=budget, count_tokens=minilm_tokens, min_truncated_tokens=16)
    assert 0 < packed.num_tokens == minilm_tokens(packed.text) <= budget
    ranks = sorted(c.rank for c in packed.citations)
    assert ranks == list(range(1, len(ranks) + 1))  # a prefix of the ranking
    assert set(packed.over_budget) == {h.chunk_id for h in hits[len(ranks):]}
    for c in packed.citations:
        full = hits[c.rank - 1].text
        assert full[c.start_char : c.end_char] == c.text
        assert c.truncated == (c.end_char < len(full)) and (not c.truncated or c.rank == len(ranks))
    last = next(c for c in packed.citations if c.rank == len(ranks))
    if last.truncated:
        full = hits[last.rank - 1].text
        assert full[last.end_char].isspace()  # cut at a word boundary
        # the longest such prefix: one more word would not fit
        longer = re.match(r"\s*\S+", full[last.end_char :])
        assert longer is not None
        grown = packed.text.replace(last.text, last.text + longer.group(0))
        assert minilm_tokens(grown) > budget


def test_a_passage_that_leaves_too_little_room_is_dropped_not_truncated():
    def words(text: str) -> int:
        return len(text.split())

    hits = [hit(1, " ".join(["word"] * 30)), hit(2, " ".join(["other"] * 30))]
    # "[1] word x30" is 31 words: 14 of the 45 left, fewer than 20 -> passage 2 is dropped
    packed = pack_context(hits, max_tokens=45, count_tokens=words, min_truncated_tokens=20)
    assert [c.chunk_id for c in packed.citations] == [1] and packed.over_budget == (2,)
    # enough room: "[2]" plus 13 words fill it exactly
    packed = pack_context(hits, max_tokens=45, count_tokens=words, min_truncated_tokens=5)
    assert [c.chunk_id for c in packed.citations] == [1, 2] and packed.citations[1].truncated
    assert packed.citations[1].text == " ".join(["other"] * 13) and packed.num_tokens == 45
    assert packed.over_budget == ()
    assert pack_context(hits, max_tokens=10, count_tokens=words, min_truncated_tokens=20).citations == []


def test_cited_numbers_and_mapping():
    assert cited_numbers("A [2], B [1, 3] and [1;4], C [2-4] [7 – 8]") == [2, 1, 3, 4, 7, 8]
    assert cited_numbers("no citations, a[x] or [] or [1-100000]") == [1, 100000]
    hits = [hit(i, f"passage {i} about subject {i}") for i in range(1, 4)]
    packed = pack_context(hits, max_tokens=1000)
    got = cited("The answer [3] is backed by [1, 9] and [3].", packed)
    assert [(c.number, c.chunk_id) for c in got] == [(3, 2), (1, 1)]  # [3] in reading order is rank 2
    assert packed.citation(0) is None and packed.citation(4) is None


def test_bad_input():
    with pytest.raises(InvalidInput, match="max_tokens"):
        pack_context([], max_tokens=0)
    with pytest.raises(InvalidInput, match="dedupe_threshold"):
        pack_context([], max_tokens=10, dedupe_threshold=0)
    empty = pack_context([], max_tokens=10)
    assert empty.text == "" and empty.citations == [] and empty.num_tokens == 0
