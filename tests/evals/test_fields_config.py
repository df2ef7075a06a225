"""The `bm25-fields` kind: one BM25 index per field, a document's score the sum of its fields' scores."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, cast

import numpy as np
import pytest

from ragsvc.errors import InvalidInput
from ragsvc.evals.configs import RunContext
from ragsvc.evals.fields_config import FieldsRetriever, parse_fields_config, split_fields
from ragsvc.evals.kinds import config_kind
from ragsvc.evals.sections import RetrievalSection
from ragsvc.index.lexical_tokens import LexicalTokenizer
from ragsvc.types import DocumentInput

DOCS = [
    ("d1", "Vitamin D deficiency", "Low vitamin levels are linked to bone loss in older adults."),
    ("d2", "Bone density", "Calcium and vitamin D supplements and bone density in women."),
    ("d3", "", "A study of sleep and memory in mice."),
    ("d4", "Memory in mice", "Sleep deprivation impairs memory consolidation."),
]


def _context(depth: int = 10) -> RunContext:
    documents = [DocumentInput(text=f"{title} {text}".strip(), id=doc_id, metadata={"title": title} if title else {})
                 for doc_id, title, text in DOCS]
    # the kind reads only the documents and the retrieval section; no store is needed
    return RunContext(store=cast(Any, None), documents=documents, retrieval=RetrievalSection(depth=depth),
                      collection_prefix="t")


def _bm25(texts: list[str], query: str, analyzer: Any, k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    """Lucene's BM25 by hand over one field's texts."""
    tokenizer = LexicalTokenizer(analyzer)
    docs = [Counter(t) for t in tokenizer.tokenize(texts)]
    lengths = [sum(d.values()) for d in docs]
    avgdl = sum(lengths) / len(docs)
    scores = np.zeros(len(docs))
    for term in tokenizer.tokenize([query])[0]:
        df = sum(1 for d in docs if term in d)
        if not df:
            continue
        idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
        for i, d in enumerate(docs):
            tf = d.get(term, 0)
            scores[i] += idf * tf / (tf + k1 * (1 - b + b * lengths[i] / avgdl))
    return scores


@pytest.mark.parametrize("analyzer", ["lucene", "default"])
def test_scores_are_the_sum_of_per_field_bm25(analyzer: str) -> None:
    from ragsvc.evals.fields_config import ANALYZERS

    config = parse_fields_config({"name": "beir", "kind": "bm25-fields", "analyzer": analyzer},
                                 where=lambda *keys: "suite.toml")
    retriever = FieldsRetriever(config, _context())
    query = "vitamin D and bone memory"
    got = retriever.search("q1", query, np.zeros(1))
    expected = (_bm25([t for _, t, _ in DOCS], query, ANALYZERS[analyzer])
                + _bm25([x for _, _, x in DOCS], query, ANALYZERS[analyzer]))
    want = {doc_id: float(s) for (doc_id, _, _), s in zip(DOCS, expected, strict=True) if s > 0}
    assert got.keys() == want.keys()
    for doc_id, score in want.items():
        assert got[doc_id] == pytest.approx(score, rel=1e-6)
    assert list(got) == sorted(got, key=lambda d: -got[d])  # best first


def test_lucene_analyzer_keeps_single_characters_and_depth_and_identical_ids_apply() -> None:
    config = parse_fields_config({"name": "beir"}, where=lambda *keys: "suite.toml")
    retriever = FieldsRetriever(config, _context(depth=1))
    hits = retriever.search("d2", "vitamin d", np.zeros(1))
    assert list(hits) == ["d1"]  # d2 (the query's own id) dropped, then the depth of 1
    assert retriever.served_by == {"bm25 x 2 fields": 1}


def test_split_fields_takes_the_title_off_the_front() -> None:
    titled = DocumentInput(text="Title here body", metadata={"title": "Title here"})
    assert split_fields(titled) == ("Title here", "body")
    assert split_fields(DocumentInput(text="no title")) == ("", "no title")


@pytest.mark.parametrize(("table", "message"), [
    ({"name": "x", "analyzer": "snowball"}, "analyzer 'snowball' is unknown"),
    ({"name": "x", "k1": -1}, "k1"),
    ({"name": "x", "b": 2}, "b must lie in [0, 1]"),
    ({"name": "x", "fields": ["title"]}, "unknown key 'fields'"),
    ({"name": "x", "compare_to": "x"}, "compare_to names another config"),
])
def test_bad_tables_say_what_to_write(table: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match="^suite.toml: ") as info:
        parse_fields_config(table, where=lambda *keys: "suite.toml")
    assert message in info.value.message


def test_registered_as_a_config_kind() -> None:
    kind = config_kind("bm25-fields")
    assert kind is not None and kind.parse({"name": "a"}, where=lambda *k: "s").to_dict()["analyzer"] == "lucene"
