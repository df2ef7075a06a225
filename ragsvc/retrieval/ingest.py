"""Turning caller documents into PreparedDocuments: ids, content hashes, chunks, and vectors (cache first)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ragsvc.embed.chunker import chunk_spans
from ragsvc.embed.embedder import Embedder
from ragsvc.errors import InvalidInput
from ragsvc.store.records import CollectionRecord, PreparedChunk, PreparedDocument
from ragsvc.types import ChunkInput, DocumentInput

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
        if not doc_id or len(doc_id) > 512:
            raise InvalidInput(f"document {position} has an id of length {len(doc_id)}; use 1 to 512 characters")
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


def prepare_documents(
    docs: Sequence[tuple[str, str, DocumentInput]],
    *,
    embedder: Embedder,
    record: CollectionRecord,
    cached: CachedLookup,
    progress: bool = False,
) -> list[PreparedDocument]:
    """Chunk every (id, content hash, document), embed the chunk texts the cache does not hold, assemble records."""
    split = [(doc_id, digest, doc, [(sha256(c.text), c) for c in split_document(doc, embedder, record)])
             for doc_id, digest, doc in docs]
    texts = {h: c.text for _, _, _, chunks in split for h, c in chunks}
    vectors = cached(list(texts))
    missing = [h for h in texts if h not in vectors]
    if missing:
        fresh = embedder.embed_documents([texts[h] for h in missing], progress=progress)  # (m, dim)
        vectors.update(zip(missing, fresh, strict=True))
    return [
        PreparedDocument(
            id=doc_id, source=doc.source, content_hash=digest, metadata=dict(doc.metadata), text=doc.text,
            chunks=[PreparedChunk(c.text, c.start_char, c.end_char, {**doc.metadata, **c.metadata}, h, vectors[h])
                    for h, c in chunks],
        )
        for doc_id, digest, doc, chunks in split
    ]
