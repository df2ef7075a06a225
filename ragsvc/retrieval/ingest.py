"""Turning caller documents into PreparedDocuments: ids, content hashes, chunks, and vectors (cache first).

Pure logic behind the store's two-step write (`VectorStore.prepare_documents`, then `commit`): a request is
split into chunks and embedded here, with no lock held, into a `PreparedBatch`; `merge_batches` turns the
batches one transaction commits (a group) into the documents to write.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ragsvc.embed.chunker import chunk_spans
from ragsvc.embed.embedder import Embedder
from ragsvc.errors import InvalidInput
from ragsvc.store.records import CollectionRecord, PreparedChunk, PreparedDocument
from ragsvc.types import MAX_DOCUMENT_ID_CHARS, ChunkInput, DocumentInput

CachedLookup = Callable[[list[str]], dict[str, np.ndarray]]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_hash(doc: DocumentInput) -> str:
    """Hash of everything that shapes the stored chunks, so an identical re-ingest is a no-op."""
    chunks = None if doc.chunks is None else [[c.start_char, c.end_char, c.metadata] for c in doc.chunks]
    payload = json.dumps([doc.text, doc.metadata, doc.source, chunks], sort_keys=True, default=str)
    return sha256(payload)


def document_id(doc: DocumentInput) -> str:
    return doc.id if doc.id is not None else sha256(doc.text)[:24]


def validate_batch(docs: Sequence[DocumentInput]) -> list[str]:
    """Check a batch before anything is computed; return the document ids in order."""
    ids: list[str] = []
    seen: set[str] = set()
    for position, doc in enumerate(docs):
        if not doc.text or not doc.text.strip():
            raise InvalidInput(f"document {position} has empty text; every document needs some text")
        doc_id = document_id(doc)
        if not doc_id or len(doc_id) > MAX_DOCUMENT_ID_CHARS:
            raise InvalidInput(f"document {position} has an id of length {len(doc_id)}; use 1 to "
                               f"{MAX_DOCUMENT_ID_CHARS} characters")
        if doc_id in seen:
            raise InvalidInput(f"document id {doc_id!r} appears twice in one batch; ids must be unique")
        seen.add(doc_id)
        ids.append(doc_id)
        for chunk in doc.chunks or []:
            if not 0 <= chunk.start_char <= chunk.end_char <= len(doc.text) or not chunk.text.strip():
                raise InvalidInput(
                    f"document {doc_id!r} has a chunk with span [{chunk.start_char}, {chunk.end_char}) outside "
                    f"its text (length {len(doc.text)}) or with empty text"
                )
    return ids


def split_document(doc: DocumentInput, embedder: Embedder, record: CollectionRecord) -> list[ChunkInput]:
    """The caller's chunks, or token-aware spans of the text (Markdown-aware for .md sources)."""
    if doc.chunks is not None:
        return list(doc.chunks)
    markdown = bool(doc.source and doc.source.lower().endswith((".md", ".markdown")))
    spans = chunk_spans(
        doc.text,
        embedder.token_offsets(doc.text),
        max_tokens=record.chunk_tokens,
        overlap_tokens=record.chunk_overlap,
        markdown=markdown,
    )
    chunks = []
    for span in spans:
        meta: dict[str, Any] = {"section": span.section} if span.section else {}
        chunks.append(ChunkInput(doc.text[span.start_char : span.end_char], span.start_char, span.end_char, meta))
    return chunks


SplitDocument = tuple[str, str, DocumentInput, list[tuple[str, ChunkInput]]]
"""(id, content hash, document, [(chunk text hash, chunk)]): a document cut into chunks, not embedded yet."""


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """One ingest request made ready to commit: chunked and embedded, nothing written yet.

    `record` is the collection as it was when the batch was prepared; committing checks it still is (same
    embedder, width and chunking), so a collection deleted and re-created meanwhile is not written with
    chunks cut for another. `ids` are every document id of the request in order (the reply), `documents` only
    those whose content differed from what was stored when the batch was prepared: `stored_hashes` (id ->
    content hash, for those of `documents` that were stored), read after the collection's write log stood at
    `generation` (ingest_write_log.py; None: unknown), so the commit can tell whether that read still holds."""

    collection: str
    record: CollectionRecord
    ids: tuple[str, ...]
    documents: tuple[PreparedDocument, ...]
    stored_hashes: Mapping[str, str] = field(default_factory=dict)
    generation: int | None = None

    @property
    def num_chunks(self) -> int:
        return sum(len(d.chunks) for d in self.documents)


def split_documents(docs: Sequence[tuple[str, str, DocumentInput]], *, embedder: Embedder,
                    record: CollectionRecord) -> list[SplitDocument]:
    """Chunk every (id, content hash, document); each chunk with the hash of its text (the cache key)."""
    return [(doc_id, digest, doc, [(sha256(c.text), c) for c in split_document(doc, embedder, record)])
            for doc_id, digest, doc in docs]


def chunk_texts(split: Sequence[SplitDocument]) -> dict[str, str]:
    """Each distinct chunk text by its hash (a text repeated across documents is embedded once)."""
    return {h: c.text for _, _, _, chunks in split for h, c in chunks}


def assemble(split: Sequence[SplitDocument], vectors: dict[str, np.ndarray]) -> list[PreparedDocument]:
    """The records to store: each chunk with its vector (by text hash) and the document's metadata under its own."""
    return [
        PreparedDocument(
            id=doc_id, source=doc.source, content_hash=digest, metadata=dict(doc.metadata), text=doc.text,
            chunks=[PreparedChunk(c.text, c.start_char, c.end_char, {**doc.metadata, **c.metadata}, h, vectors[h])
                    for h, c in chunks],
        )
        for doc_id, digest, doc, chunks in split
    ]


def prepare_documents(
    docs: Sequence[tuple[str, str, DocumentInput]],
    *,
    embedder: Embedder,
    record: CollectionRecord,
    cached: CachedLookup,
    progress: bool = False,
) -> list[PreparedDocument]:
    """Chunk every (id, content hash, document), embed the chunk texts the cache does not hold, assemble records."""
    split = split_documents(docs, embedder=embedder, record=record)
    texts = chunk_texts(split)
    vectors = cached(list(texts))
    missing = [h for h in texts if h not in vectors]
    if missing:
        fresh = embedder.embed_documents([texts[h] for h in missing], progress=progress)  # (m, dim)
        vectors.update(zip(missing, fresh, strict=True))
    return assemble(split, vectors)


def merge_batches(batches: Sequence[PreparedBatch], stored_hashes: dict[str, str]) -> list[PreparedDocument]:
    """The documents one transaction writes for a group of batches: a later batch's version of a document
    replaces an earlier one's (the order they were committed in), and a document whose stored content hash
    already equals its own (committed meanwhile by another request) is left as it is."""
    latest: dict[str, PreparedDocument] = {}
    for batch in batches:
        for doc in batch.documents:
            latest.pop(doc.id, None)  # re-insert: keeps the order of the last write
            latest[doc.id] = doc
    return [d for d in latest.values() if stored_hashes.get(d.id) != d.content_hash]
