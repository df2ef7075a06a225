"""Plain records that cross the store boundary (what goes into one ingest transaction, what comes out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ragsvc.index.spec import IndexSpec


@dataclass(frozen=True, slots=True)
class CollectionRecord:
    name: str
    embedder_id: str
    dim: int
    index: IndexSpec
    chunk_tokens: int
    chunk_overlap: int


@dataclass(frozen=True, slots=True)
class PreparedChunk:
    """A chunk ready to store: its span, merged metadata, the hash of its text and its vector."""

    text: str
    start_char: int
    end_char: int
    metadata: dict[str, Any]
    text_hash: str
    vector: np.ndarray  # (dim,) float32


@dataclass(frozen=True, slots=True)
class PreparedDocument:
    id: str
    source: str | None
    content_hash: str
    metadata: dict[str, Any]
    text: str
    chunks: list[PreparedChunk] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one committed ingest transaction changed, so the indexes can follow."""

    added_ids: np.ndarray  # (n,) int64
    added_vectors: np.ndarray  # (n, dim) float32
    removed_ids: np.ndarray  # (m,) int64, chunks of replaced documents
    added_texts: tuple[str, ...] = ()  # (n,) the added chunks' texts, for the lexical index
