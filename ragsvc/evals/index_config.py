"""The `index` config kind: one collection per config, same documents, a different `IndexSpec`.

    [[configs]]
    name = "adaptive-128"
    kind = "index"          # the default
    backend = "hnsw"        # any IndexSpec field: backend, dims, shortlist, hnsw_m, ef_search, ivf_nprobe, ...
    dims = 128

The store caches embeddings by (embedder, text hash), so only the first collection of a suite pays for
embedding; `build_s` of the others is chunking + the catalog write + the index build.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from ragsvc.errors import CollectionNotFound, InvalidInput
from ragsvc.evals.configs import RunContext, Where
from ragsvc.index.spec import IndexSpec
from ragsvc.types import Hit

if TYPE_CHECKING:
    from ragsvc.evals.sections import RetrievalSection

logger = logging.getLogger(__name__)

_CONFIG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,35}$")
_SPEC_FIELDS = tuple(f.name for f in fields(IndexSpec))


@dataclass(frozen=True, slots=True)
class IndexConfig:
    name: str
    index: IndexSpec = field(default_factory=IndexSpec)
    kind: str = "index"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, **self.index.to_dict()}


def validate_config_name(name: Any, where: Where) -> str:
    if not isinstance(name, str) or not _CONFIG_NAME.match(name):
        raise InvalidInput(f"{where('name')}: config name {name!r} must be 1-36 letters, digits, _ . - "
                           "(it becomes part of a collection name)")
    return name


class IndexKind:
    name = "index"

    def parse(self, table: dict[str, Any], *, where: Where) -> IndexConfig:
        name = validate_config_name(table.get("name"), where)
        options = {k: v for k, v in table.items() if k not in ("name", "kind")}
        for key in options:
            if key not in _SPEC_FIELDS:
                raise InvalidInput(f"{where(key)}: unknown key {key!r} in config {name!r} (kind 'index'); "
                                   f"known keys: name, kind, {', '.join(_SPEC_FIELDS)}")
        try:
            spec = IndexSpec.from_dict(options)
        except (TypeError, ValueError) as exc:
            bad = next((k for k in options if k in str(exc)), None)
            raise InvalidInput(f"{where(bad) if bad else where()}: config {name!r}: {exc}") from exc
        return IndexConfig(name=name, index=spec)

    def prepare(self, config: IndexConfig, ctx: RunContext) -> IndexRetriever:
        collection = f"{ctx.collection_prefix}{config.name}"
        store = ctx.store
        with contextlib.suppress(CollectionNotFound):
            store.delete_collection(collection)  # a fresh build every run, so build_s means the same thing
        started = time.perf_counter()
        store.create_collection(collection, index=config.index, chunk_tokens=ctx.retrieval.chunk_tokens,
                                chunk_overlap=ctx.retrieval.chunk_overlap)
        store.add_documents(collection, ctx.documents)
        build_s = time.perf_counter() - started
        index_bytes = store.index_bytes(collection)  # what the index holds in memory to answer a query
        logger.info("built %s in %.2f s (%d index bytes)", collection, build_s, index_bytes)
        return IndexRetriever(ctx, collection, build_s, index_bytes, fetch_size(ctx.retrieval))


def fetch_size(retrieval: RetrievalSection) -> int:
    """Chunks to fetch for `depth` documents: more with token chunking, since chunks share documents."""
    return retrieval.depth * (retrieval.oversample if retrieval.chunking == "tokens" else 1)


def document_scores(hits: Sequence[Hit], retrieval: RetrievalSection, query_id: str) -> dict[str, float]:
    """Chunk hits (best first) -> document id -> score, a document scoring as its best chunk, top `depth`."""
    scores: dict[str, float] = {}
    for hit in hits:
        doc = str(hit.document_id)
        if doc not in scores:
            scores[doc] = hit.score
    if retrieval.ignore_identical_ids:
        scores.pop(query_id, None)
    return dict(list(scores.items())[: retrieval.depth])


class IndexRetriever:
    def __init__(self, ctx: RunContext, collection: str, build_s: float, index_bytes: int, fetch: int) -> None:
        self._ctx = ctx
        self.collection = collection
        self.build_s = build_s
        self.index_bytes = index_bytes
        self._fetch = fetch
        self.served_by: Counter[str] = Counter()
        """Which structure answered (the ANN, or the exact staging buffer before an index is trained)."""

    def search(self, query_id: str, text: str, vector: np.ndarray) -> dict[str, float]:
        result = self._ctx.store.search(self.collection, vector=vector, k=self._fetch)
        self.served_by[str(result.served_by)] += 1  # counted by the one-line form, which results record
        return document_scores(result.hits, self._ctx.retrieval, query_id)

    def prefetch(self, queries: Mapping[str, str]) -> float:
        return 0.0  # nothing to batch: each search is one index lookup

    def stage_report(self) -> dict[str, Any]:
        return {}  # one stage: its latency is the config's

    def close(self) -> None:
        with contextlib.suppress(CollectionNotFound):
            self._ctx.store.delete_collection(self.collection)
