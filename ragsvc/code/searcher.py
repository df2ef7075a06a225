"""Definition searchers for the query-aware repo map: which definitions are closest in meaning to a query.

`EmbeddingSearcher` embeds definitions in memory (a repository that was never indexed, small ones);
`CollectionSearcher` asks the repository's VectorStore collection (already embedded, any size).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ragsvc.code.tags import Definition
from ragsvc.embed.embedder import Embedder
from ragsvc.types import SearchResult


class _Searchable(Protocol):
    def search(self, name: str, *, query: str | None = None, k: int = 10) -> SearchResult: ...


def definition_text(definition: Definition) -> str:
    """What a definition is embedded as when its chunk text is not at hand: where it lives and its signature."""
    return f"{definition.rel_path} {definition.symbol}\n{definition.signature}"


class EmbeddingSearcher:
    """Cosine nearest definitions over embeddings computed once, at construction."""

    def __init__(self, embedder: Embedder, definitions: Sequence[Definition],
                 texts: Sequence[str] | None = None) -> None:
        if texts is not None and len(texts) != len(definitions):
            raise ValueError(f"got {len(texts)} texts for {len(definitions)} definitions; pass one per definition")
        self._embedder = embedder
        self._keys = [(d.rel_path, d.symbol) for d in definitions]
        chosen = list(texts) if texts is not None else [definition_text(d) for d in definitions]
        self._vectors = embedder.embed_documents(chosen)  # (num_definitions, dim), rows L2-normalised

    def nearest(self, query: str, *, k: int) -> list[tuple[str, str, float]]:
        if not self._keys:
            return []
        scores = self._vectors @ self._embedder.embed_query(query)  # (num_definitions,)
        top = np.argsort(-scores)[:k]
        return [(*self._keys[i], float(scores[i])) for i in top]


class CollectionSearcher:
    """Nearest definitions from a code collection's chunks (several chunks of one definition count once)."""

    def __init__(self, store: _Searchable, collection: str) -> None:
        self._store = store
        self._collection = collection

    def nearest(self, query: str, *, k: int) -> list[tuple[str, str, float]]:
        result = self._store.search(self._collection, query=query, k=2 * k)
        seen: dict[tuple[str, str], float] = {}
        for hit in result.hits:
            key = (hit.metadata.get("path", hit.document_id), hit.metadata.get("symbol", ""))
            if key[1] and key[1] != "<module>" and key not in seen:
                seen[key] = float(hit.score)
        return [(path, symbol, score) for (path, symbol), score in list(seen.items())[:k]]
