"""The `bm25-fields` config kind: BM25 with one index per document field, the layout of published BEIR BM25.

    [[configs]]
    name = "lexical-beir"
    kind = "bm25-fields"
    analyzer = "lucene"      # lucene | default
    k1 = 1.2
    b = 0.75

The collection's own lexical index (the `pipeline` kind's `lexical` mode) indexes title and body as one text.
BEIR's BM25 figures come from Lucene with title and body as two fields: each field has its own document
frequencies and average length, and a document's score is the sum of its fields' scores (a boolean query
with one clause per field, as Pyserini's "multifield" BEIR runs issue it). The two layouts rank differently,
so agreeing with a published figure needs the published layout; this kind exists as that anchor, and is an
evaluation kind only (the service keeps the one-field index, which scores higher on SciFact).

`analyzer = "lucene"` mirrors Lucene's EnglishAnalyzer as far as bm25s and PyStemmer can: Lucene's 33 English
stopwords (bm25s's "english" list is that list), the Porter stemmer, and single-character tokens kept
(Lucene's standard tokenizer keeps them; our default pattern drops them). `default` is the service's
tokenizer. Both indexes are built in memory from the suite's documents, per config, in seconds.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from ragsvc.errors import InvalidInput
from ragsvc.evals.configs import RunContext, Where
from ragsvc.evals.index_config import validate_config_name
from ragsvc.index.lexical_index import Bm25Params, LexicalIndex
from ragsvc.index.lexical_tokens import TokenizerConfig
from ragsvc.types import DocumentInput

logger = logging.getLogger(__name__)

Analyzer = Literal["lucene", "default"]
ANALYZERS: dict[str, TokenizerConfig] = {
    "lucene": TokenizerConfig(stemmer="porter", stopwords="english", token_pattern=r"(?u)\b\w+\b"),
    "default": TokenizerConfig(),
}
_KEYS = ("name", "kind", "analyzer", "k1", "b", "compare_to")


@dataclass(frozen=True, slots=True)
class FieldsConfig:
    name: str
    analyzer: Analyzer = "lucene"
    k1: float = 1.2
    b: float = 0.75
    compare_to: str | None = None
    kind: str = "bm25-fields"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_fields_config(table: dict[str, Any], *, where: Where) -> FieldsConfig:
    name = validate_config_name(table.get("name"), where)
    for key in table:
        if key not in _KEYS:
            raise InvalidInput(f"{where(key)}: unknown key {key!r} in config {name!r} (kind 'bm25-fields'); "
                               f"known keys: {', '.join(_KEYS)}")
    analyzer = table.get("analyzer", "lucene")
    if analyzer not in ANALYZERS:
        raise InvalidInput(f"{where('analyzer')}: analyzer {analyzer!r} is unknown; use one of "
                           f"{', '.join(ANALYZERS)}")
    k1, b = table.get("k1", 1.2), table.get("b", 0.75)
    try:
        Bm25Params(k1=float(k1), b=float(b))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{where('k1' if 'k1' in str(exc) else 'b')}: config {name!r}: {exc}") from exc
    compare_to = table.get("compare_to")
    if compare_to is not None and (not isinstance(compare_to, str) or compare_to == name):
        raise InvalidInput(f"{where('compare_to')}: compare_to names another config of the suite")
    return FieldsConfig(name=name, analyzer=analyzer, k1=float(k1), b=float(b), compare_to=compare_to)


def split_fields(document: DocumentInput) -> tuple[str, str]:
    """(title, body) of a suite document, whose text is the title and body joined by a space."""
    title = str(document.metadata.get("title") or "")
    text = document.text
    if title and text.startswith(title):
        return title, text[len(title):].strip()
    return title, text


class FieldsKind:
    name = "bm25-fields"

    def parse(self, table: dict[str, Any], *, where: Where) -> FieldsConfig:
        return parse_fields_config(table, where=where)

    def prepare(self, config: FieldsConfig, ctx: RunContext) -> FieldsRetriever:
        return FieldsRetriever(config, ctx)


class FieldsRetriever:
    """One LexicalIndex per field over the suite's documents; a document's score sums its fields' scores."""

    def __init__(self, config: FieldsConfig, ctx: RunContext) -> None:
        started = time.perf_counter()
        self._depth = ctx.retrieval.depth
        self._ignore_identical = ctx.retrieval.ignore_identical_ids
        self._ids = [str(d.id) for d in ctx.documents]
        pairs = [split_fields(d) for d in ctx.documents]
        params = Bm25Params(k1=config.k1, b=config.b)
        self._indexes: list[LexicalIndex] = []
        for column in zip(*pairs, strict=True) if pairs else ():
            index = LexicalIndex(tokenizer=ANALYZERS[config.analyzer], params=params)
            index.add(np.arange(len(column)), list(column))
            self._indexes.append(index)
        self.build_s = time.perf_counter() - started
        self.index_bytes = sum(index.nbytes for index in self._indexes)
        self.served_by: Counter[str] = Counter()
        logger.info("bm25-fields config %s: %d fields over %d documents in %.2f s", config.name,
                    len(self._indexes), len(self._ids), self.build_s)

    def search(self, query_id: str, text: str, vector: np.ndarray) -> dict[str, float]:
        total = np.zeros(len(self._ids))
        for index in self._indexes:  # every matching document of each field: a sum needs all of them
            hits = index.search(text, len(self._ids))
            total[np.asarray(hits.ids, dtype=np.int64)] += hits.scores
        order = np.argsort(-total, kind="stable")
        scores = {self._ids[i]: float(total[i]) for i in order[: self._depth + 1] if total[i] > 0}
        if self._ignore_identical:
            scores.pop(query_id, None)
        self.served_by[f"bm25 x {len(self._indexes)} fields"] += 1
        return dict(list(scores.items())[: self._depth])

    def prefetch(self, queries: Mapping[str, str]) -> float:
        return 0.0

    def stage_report(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self._indexes.clear()
