"""LexicalIndex against a brute-force BM25 written with plain dicts, through adds, deletes, merges and reloads."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragsvc.errors import IndexCorrupt, InvalidInput
from ragsvc.index.lexical_files import MANIFEST_NAME, LexicalSnapshot, write_snapshot
from ragsvc.index.lexical_index import Bm25Params, LexicalHits, LexicalIndex, MergePolicy
from ragsvc.index.lexical_tokens import LexicalTokenizer, TokenizerConfig

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "running", "runs", "the", "and", "of"]
QUERIES = ["alpha", "beta gamma", "running delta delta", "zeta the", "epsilon alpha beta runs", "gamma of and"]
TINY_MERGES = MergePolicy(fraction=0.5, min_rows=3)  # merges every few batches, so tests cross many merges


def reference_bm25(docs: dict[int, list[str]], query: list[str], params: Bm25Params) -> dict[int, float]:
    """BM25 (Lucene form) by definition: loops over every document and every query term, repeats included."""
    n = len(docs)
    if n == 0:
        return {}
    avgdl = sum(len(terms) for terms in docs.values()) / n
    df: Counter[str] = Counter()
    for terms in docs.values():
        df.update(set(terms))
    scores = {}
    for doc_id, terms in docs.items():
        tf = Counter(terms)
        matched = [t for t in query if tf[t] > 0]
        if not matched:
            continue
        score = 0.0
        for term in matched:
            idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
            score += idf * tf[term] / (tf[term] + params.k1 * (1 - params.b + params.b * len(terms) / avgdl))
        scores[doc_id] = score
    return scores


def assert_matches_reference(hits: LexicalHits, expected: dict[int, float], k: int) -> None:
    best = sorted(expected.items(), key=lambda item: (-item[1], item[0]))[:k]
    assert len(hits.ids) == len(best)
    assert len(set(hits.ids.tolist())) == len(hits.ids)
    # every returned id carries its true score, and the scores are the k best ones (ties may swap ids only)
    np.testing.assert_allclose(hits.scores, [expected[i] for i in hits.ids.tolist()], rtol=1e-9)
    np.testing.assert_allclose(hits.scores, [score for _, score in best], rtol=1e-9)
    for i in range(len(hits.ids) - 1):  # best first; exact ties in ascending id order
        assert hits.scores[i] > hits.scores[i + 1] or (
            hits.scores[i] == hits.scores[i + 1] and hits.ids[i] < hits.ids[i + 1])


def check_all_queries(index: LexicalIndex, texts: dict[int, str], k: int = 5) -> None:
    tokenizer = index.tokenizer
    docs = dict(zip(texts, tokenizer.tokenize(list(texts.values())), strict=True))
    for query in QUERIES:
        expected = reference_bm25(docs, tokenizer.tokenize([query])[0], index.params)
        assert_matches_reference(index.search(query, k), expected, k)


texts_strategy = st.lists(st.sampled_from(WORDS), min_size=0, max_size=8).map(" ".join)
ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(st.tuples(st.integers(0, 40), texts_strategy), min_size=1, max_size=6,
                                           unique_by=lambda pair: pair[0])),
        st.tuples(st.just("delete"), st.lists(st.integers(0, 40), max_size=5)),
        st.tuples(st.just("merge"), st.none()),
    ),
    min_size=1, max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(ops=ops_strategy, k=st.integers(1, 12))
def test_matches_brute_force_through_adds_deletes_and_merges(ops, k) -> None:
    index = LexicalIndex(merge_policy=TINY_MERGES)
    model: dict[int, str] = {}
    for op, arg in ops:
        if op == "add":
            index.add([i for i, _ in arg], [text for _, text in arg])
            model.update(arg)
        elif op == "delete":
            index.delete(arg)
            for i in arg:
                model.pop(i, None)
        else:
            index.merge()
        assert len(index) == len(model)
        check_all_queries(index, model, k)


@pytest.mark.parametrize("params", [Bm25Params(k1=1.2, b=0.75), Bm25Params(k1=0.9, b=0.4), Bm25Params(k1=2.0, b=0.0)])
def test_matches_brute_force_for_other_params(params: Bm25Params) -> None:
    rng = np.random.default_rng(0)
    texts = {int(i): " ".join(rng.choice(WORDS, size=rng.integers(0, 12))) for i in range(60)}
    index = LexicalIndex(params=params, merge_policy=TINY_MERGES)
    for start in range(0, 60, 7):
        batch = list(texts)[start : start + 7]
        index.add(batch, [texts[i] for i in batch])
    check_all_queries(index, texts, k=60)


def build(texts: dict[int, str], **kwargs) -> LexicalIndex:
    index = LexicalIndex(**kwargs)
    index.add(list(texts), list(texts.values()))
    return index


CORPUS = {
    1: "The cat sat on the mat",
    2: "Dogs chase cats in the garden",
    3: "A bird in the hand is worth two in the bush",
    4: "Cats and dogs: running, ran, runs",
    5: "The running of the bulls",
    6: "cat cat cat",
}


def test_read_your_writes_without_a_merge() -> None:
    index = build({i: f"filler text number {i}" for i in range(1, 101)}, merge_policy=MergePolicy(min_rows=10_000))
    index.merge()
    index.add([500], ["a zebra walks in"])
    assert index.stats()["delta_rows"] == 1  # served from the delta segment, not a rebuild
    assert index.search("zebra", 3).ids.tolist() == [500]
    index.delete([500])
    assert index.search("zebra", 3).ids.tolist() == []


def test_delete_then_search_never_returns_deleted_ids() -> None:
    rng = np.random.default_rng(1)
    texts = {i: " ".join(rng.choice(WORDS, size=6)) for i in range(200)}
    index = build(texts, merge_policy=TINY_MERGES)
    to_delete = rng.choice(200, size=120, replace=False)
    deleted: set[int] = set()
    for chunk in np.array_split(to_delete, 10):
        index.delete(chunk)
        deleted.update(chunk.tolist())
        for query in QUERIES:
            assert not deleted & set(index.search(query, 200).ids.tolist())
    live = {i: t for i, t in texts.items() if i not in deleted}
    check_all_queries(index, live, k=200)


def test_replacing_a_chunk_forgets_its_old_text() -> None:
    index = build(CORPUS)
    index.add([6], ["a horse"])
    assert 6 not in index.search("cat", 10).ids.tolist()
    assert index.search("horse", 10).ids.tolist() == [6]
    assert len(index) == len(CORPUS)


def test_allowed_ids_filter_keeps_global_statistics() -> None:
    index = build(CORPUS)
    full = index.search("cat running", 10)
    allowed = [2, 5, 99]
    filtered = index.search("cat running", 10, allowed_ids=allowed)
    assert set(filtered.ids.tolist()) <= set(allowed)
    keep = np.isin(full.ids, allowed)
    np.testing.assert_array_equal(filtered.ids, full.ids[keep])
    np.testing.assert_array_equal(filtered.scores, full.scores[keep])  # df/N/avgdl still cover every chunk
    assert index.search("cat", 10, allowed_ids=[]).ids.tolist() == []


def test_k_larger_than_the_matches_returns_every_match() -> None:
    index = build(CORPUS)
    hits = index.search("cat", 1000)
    assert sorted(hits.ids.tolist()) == [1, 2, 4, 6]  # "cats" stems to "cat"
    assert hits.ids[0] == 6


def test_ties_are_broken_by_ascending_id() -> None:
    index = build({9: "same words here", 3: "same words here", 5: "same words here", 1: "other"})
    hits = index.search("words", 2)
    assert hits.ids.tolist() == [3, 5]
    assert hits.scores[0] == hits.scores[1]


@pytest.mark.parametrize("query", ["", "   ", "the and of", "unknownword", "!!"])
def test_queries_without_indexed_terms_give_no_hits(query: str) -> None:
    hits = build(CORPUS).search(query, 5)
    assert hits.ids.shape == (0,) and hits.scores.shape == (0,)
    assert LexicalIndex().search("cat", 5).ids.tolist() == []  # empty index


@pytest.mark.parametrize(("ids", "texts"), [
    ([1, 2], ["only one"]),
    ([-1], ["negative id"]),
    ([1, 1], ["dup", "dup"]),
    ([1], [b"bytes"]),
    ([1.5], ["float id"]),
    ([1], "a bare string"),
])
def test_bad_add_inputs_raise_invalid_input(ids, texts) -> None:
    index = LexicalIndex()
    with pytest.raises(InvalidInput):
        index.add(ids, texts)
    assert len(index) == 0


@pytest.mark.parametrize("k", [0, -3, True, 2.5])
def test_bad_k_raises_invalid_input(k) -> None:
    with pytest.raises(InvalidInput):
        build(CORPUS).search("cat", k)


def test_save_load_round_trip_gives_identical_results(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    texts = {i: " ".join(rng.choice(WORDS, size=rng.integers(1, 10))) for i in range(0, 300, 3)}
    index = build(texts, merge_policy=TINY_MERGES)
    index.delete(list(range(0, 300, 9)))
    index.add([1000, 1001], ["alpha alpha zeta", "brand new words"])  # in the delta at save time
    before = {q: index.search(q, 20) for q in [*QUERIES, "brand"]}
    index.save(tmp_path)
    loaded = LexicalIndex.load(tmp_path)
    assert loaded is not None
    assert loaded.stats() == index.stats() and loaded.watermark == 1001
    np.testing.assert_array_equal(loaded.live_ids(), index.live_ids())
    for query, hits in before.items():
        again = loaded.search(query, 20)
        np.testing.assert_array_equal(again.ids, hits.ids)
        np.testing.assert_array_equal(again.scores, hits.scores)
    loaded.add([2000], ["gamma after reload"])  # a loaded index keeps growing its vocabulary
    assert 2000 in loaded.search("reload gamma", 5).ids.tolist()


def test_save_replaces_the_previous_generation(tmp_path: Path) -> None:
    index = build(CORPUS)
    index.save(tmp_path)
    index.add([7], ["cat"])
    index.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {MANIFEST_NAME, "lexical.g2.npz"}
    loaded = LexicalIndex.load(tmp_path)
    assert loaded is not None and 7 in loaded.search("cat", 10).ids.tolist()


def test_tokenizer_config_round_trips_through_the_manifest(tmp_path: Path) -> None:
    config = TokenizerConfig(stemmer=None, stopwords=None, lower=False)
    index = build(CORPUS, tokenizer=config, params=Bm25Params(k1=1.5, b=0.6))
    index.save(tmp_path)
    loaded = LexicalIndex.load(tmp_path)
    assert loaded is not None
    assert loaded.tokenizer_config == config and loaded.params == Bm25Params(k1=1.5, b=0.6)
    assert loaded.search("The", 10).ids.tolist() == index.search("The", 10).ids.tolist() == [5, 1]
    assert set(loaded.search("the", 10).ids.tolist()) == {1, 2, 3, 5}  # no lowercasing: "the" is another term
    stored = json.loads((tmp_path / MANIFEST_NAME).read_text())["tokenizer"]
    assert TokenizerConfig.from_dict(stored) == config


def test_tokenizer_is_deterministic_and_stems() -> None:
    tokenizer = LexicalTokenizer()
    first = tokenizer.tokenize(["The Running dogs ran, the runner runs"])
    assert first == LexicalTokenizer(TokenizerConfig()).tokenize(["The Running dogs ran, the runner runs"])
    assert first == [["run", "dog", "ran", "runner", "run"]]
    assert tokenizer.tokenize(["", "the of and"]) == [[], []]


@pytest.mark.parametrize("kwargs", [{"stemmer": "klingon"}, {"stopwords": "klingon"}, {"token_pattern": "("}])
def test_bad_tokenizer_config_is_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        TokenizerConfig(**kwargs)


def test_load_of_an_empty_folder_returns_none(tmp_path: Path) -> None:
    assert LexicalIndex.load(tmp_path) is None


def _corrupt_data(directory: Path) -> None:
    path = next(directory.glob("lexical.g*.npz"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate_data(directory: Path) -> None:
    path = next(directory.glob("lexical.g*.npz"))
    path.write_bytes(path.read_bytes()[:100])


def _remove_data(directory: Path) -> None:
    next(directory.glob("lexical.g*.npz")).unlink()


def _garbage_manifest(directory: Path) -> None:
    (directory / MANIFEST_NAME).write_text("{not json")


def _future_manifest(directory: Path) -> None:
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    manifest["format_version"] = 99
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))


def _bad_params(directory: Path) -> None:
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    manifest["params"]["b"] = 7
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))


def _manifest_without_checksum(directory: Path) -> None:
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    del manifest["file"]["crc32"]
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))


def _manifest_file_not_an_object(directory: Path) -> None:
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    manifest["file"] = 3
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage", [_corrupt_data, _truncate_data, _remove_data, _garbage_manifest,
                                    _future_manifest, _bad_params, _manifest_without_checksum,
                                    _manifest_file_not_an_object])
def test_a_damaged_index_raises_index_corrupt(tmp_path: Path, damage) -> None:
    build(CORPUS).save(tmp_path)
    damage(tmp_path)
    with pytest.raises(IndexCorrupt):
        LexicalIndex.load(tmp_path)


def test_arrays_that_do_not_fit_raise_index_corrupt(tmp_path: Path) -> None:
    """A file whose checksum matches but whose arrays are inconsistent (a bug, not bit rot) is refused too."""
    bad = LexicalSnapshot(terms=["cat"], indptr=np.array([0, 1]), rows=np.array([5], np.int32),
                          tfs=np.array([1], np.int32), row_ids=np.array([1]), doc_len=np.array([1], np.int32),
                          tokenizer=TokenizerConfig().to_dict(), params={"k1": 1.2, "b": 0.75}, watermark=1,
                          generation=1)
    write_snapshot(tmp_path, bad, versions={})
    with pytest.raises(IndexCorrupt, match="outside the rows"):
        LexicalIndex.load(tmp_path)


def test_deleting_everything_leaves_a_usable_empty_index(tmp_path: Path) -> None:
    index = build(CORPUS)
    index.delete(list(CORPUS))
    index.merge()
    assert len(index) == 0 and index.search("cat", 5).ids.tolist() == []
    assert index.live_ids().tolist() == []
    index.save(tmp_path)
    loaded = LexicalIndex.load(tmp_path)
    assert loaded is not None and len(loaded) == 0 and loaded.watermark == 6
    loaded.add([8], ["cat"])
    assert loaded.search("cat", 5).ids.tolist() == [8]
    assert loaded.live_ids().tolist() == [8]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops_strategy)
def test_reload_mid_sequence_matches_brute_force(tmp_path: Path, ops) -> None:
    index = LexicalIndex(merge_policy=TINY_MERGES)
    model: dict[int, str] = {}
    for step, (op, arg) in enumerate(ops):
        if op == "add":
            index.add([i for i, _ in arg], [text for _, text in arg])
            model.update(arg)
        elif op == "delete":
            index.delete(arg)
            for i in arg:
                model.pop(i, None)
        if step % 3 == 2:
            index.save(tmp_path)
            reloaded = LexicalIndex.load(tmp_path, merge_policy=TINY_MERGES)
            assert reloaded is not None
            index = reloaded
    check_all_queries(index, model, k=8)


CJK = {1: "分页注意力把缓存分成固定大小的块。", 2: "连续批处理让新请求加入正在运行的批次。",
       3: "ページドアテンションはメモリを節約します。", 4: "Paged attention keeps the cache in blocks."}


@pytest.mark.parametrize(("query", "expected"), [("注意力", [1]), ("缓存的块", [1]), ("新请求", [2]),
                                                 ("メモリ", [3]), ("attention 注意力", [1, 4])])
def test_chinese_and_japanese_queries_match_inside_longer_runs(query: str, expected: list[int]) -> None:
    assert sorted(build(CJK).search(query, 10).ids.tolist()) == expected
    whole_runs = build(CJK, tokenizer=TokenizerConfig(cjk_bigrams=False))
    assert 1 not in whole_runs.search(query, 10).ids.tolist()  # a clause is one term: only the same clause matches


class _Texts:
    """A catalog's chunk texts for `open_lexical` (all live)."""

    def __init__(self, texts: dict[int, str]) -> None:
        self.texts = texts

    def iter_texts(self, *, after_id: int = 0, batch_size: int = 8192):
        ids = [i for i in sorted(self.texts) if i > after_id]
        if ids:
            yield np.array(ids, dtype=np.int64), [self.texts[i] for i in ids]

    def live_ids(self, *, up_to: int) -> np.ndarray:
        return np.array([i for i in sorted(self.texts) if i <= up_to], dtype=np.int64)


@pytest.mark.parametrize(("field", "before", "texts", "query"), [
    ("cjk_bigrams", False, CJK, "注意力"),
    ("unicode_form", None, {1: "ＰＡＧＥＤ attention", 2: "continuous batching"}, "paged"),
])
def test_an_index_saved_before_a_tokenizer_field_is_rebuilt_with_it_on_open(tmp_path: Path, field, before, texts,
                                                                             query) -> None:
    from ragsvc.index.lexical_collection import open_lexical

    build(texts, tokenizer=TokenizerConfig(**{field: before})).save(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    del manifest["tokenizer"][field]  # as an index saved by an earlier version has it
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    old = LexicalIndex.load(tmp_path)
    assert old is not None and getattr(old.tokenizer_config, field) is before
    opened = open_lexical(tmp_path, _Texts(texts))
    assert opened.tokenizer_config == TokenizerConfig() and opened.search(query, 10).ids.tolist() == [1]


def test_one_word_in_any_unicode_form_is_one_term() -> None:
    import unicodedata

    texts = {1: unicodedata.normalize("NFD", "Le café résumé des blocs"), 2: "ＰＡＧＥＤ attention",
             3: "the ﬁle system", 4: "plain cafe"}
    index = build(texts)
    assert index.search("café résumé", 10).ids.tolist()[0] == 1  # composed query, decomposed document
    assert index.search("paged", 10).ids.tolist() == [2]  # full-width letters
    assert index.search("file", 10).ids.tolist() == [3]  # a ligature
    as_given = build(texts, tokenizer=TokenizerConfig(unicode_form=None))
    assert 1 not in as_given.search("café résumé", 10).ids.tolist()
    assert as_given.search("paged", 10).ids.tolist() == []


def test_an_unknown_unicode_form_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown unicode_form 'NFX'"):
        TokenizerConfig(unicode_form="NFX")
