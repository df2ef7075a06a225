"""Ids and plain records shared by every part of ragsvc (store, index, retrieval, api)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NewType

# NewType ids catch accidental misuse (passing a document id where a chunk id is expected).
ChunkId = NewType("ChunkId", int)
DocumentId = NewType("DocumentId", str)
CollectionName = NewType("CollectionName", str)

Metadata = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChunkInput:
    """A chunk the caller cut itself (code definitions, say): a span of the document's text plus metadata."""

    text: str
    start_char: int
    end_char: int
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DocumentInput:
    """A document as a caller hands it in. `id` is derived from the content when absent.

    When `chunks` is None the store's chunker cuts the text; otherwise the given chunks are stored as they are
    (each chunk's metadata is merged over the document's).
    """

    text: str
    id: str | None = None
    metadata: Metadata = field(default_factory=dict)
    source: str | None = None
    chunks: list[ChunkInput] | None = None


@dataclass(frozen=True, slots=True)
class Chunk:
    """One embedded span of a document. `start_char`/`end_char` index into the document's text."""

    id: ChunkId
    document_id: DocumentId
    ordinal: int
    text: str
    start_char: int
    end_char: int
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Hit:
    """A search result: the chunk, the document it came from, and its score (higher is better)."""

    chunk_id: ChunkId
    document_id: DocumentId
    text: str
    score: float
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Hits best first, the wall time of each stage in milliseconds, and which index answered."""

    hits: list[Hit]
    timings_ms: dict[str, float]
    served_by: str
