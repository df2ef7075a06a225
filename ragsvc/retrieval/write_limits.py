"""Bounds on what one ingest batch may store, checked before anything is embedded or written.

A batch's cost is not its request's size. A document's metadata is copied into each of its chunks (the chunks
table holds the merged metadata, so that filters read one row per hit), and a collection chunked with a large
overlap cuts a chunk at nearly every token. Unbounded, a 2.8 MB request (1.9M characters of text with 0.9 MB of
metadata, 3,750 chunks) wrote a 3.4 GB WAL and took the server to 15.5 GB resident, and 125k characters in
a collection of 16-token chunks overlapping by 15 became 31,457 chunks to embed. Three limits bound it:

- `max_metadata_bytes` bounds one document's (or one given chunk's) metadata as compact UTF-8 JSON. The
  default, 40 KiB, is the per-vector metadata limit of Pinecone, whose users bring such records here.
- `max_write_bytes` bounds the text and metadata one batch stores: the documents' text and metadata, plus
  every chunk's text and merged metadata. The default, 64 MiB, holds a full 16 MiB request of plain text
  with its chunk overlaps.
- `max_batch_chunks` bounds the chunks one batch embeds and stores (each a vector in the chunks table, the
  embedding cache and the index). The default, 32,768, holds a full 16 MiB request at the default chunking
  (about 25,000 chunks of 200 tokens).

Each answers 413 naming the document or batch and the setting to raise. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ragsvc.errors import BatchTooLarge, PayloadTooLarge

if TYPE_CHECKING:
    from ragsvc.config import StoreSettings
    from ragsvc.retrieval.ingest import SplitDocument
    from ragsvc.types import DocumentInput


@dataclass(frozen=True, slots=True)
class WriteLimits:
    """Settings `store.max_metadata_bytes`, `store.max_write_bytes`, `store.max_batch_chunks`."""

    max_metadata_bytes: int = 40_960
    max_write_bytes: int = 64 << 20
    max_batch_chunks: int = 32_768

    @classmethod
    def from_settings(cls, section: StoreSettings) -> WriteLimits:
        return cls(max_metadata_bytes=section.max_metadata_bytes, max_write_bytes=section.max_write_bytes,
                   max_batch_chunks=section.max_batch_chunks)


def metadata_bytes(metadata: Mapping[str, Any]) -> int:
    """Size of `metadata` as stored: compact JSON, UTF-8."""
    return len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8"))


def check_metadata(docs: Sequence[DocumentInput], limits: WriteLimits) -> None:
    """Refuse a document or given chunk whose metadata exceeds the limit."""
    for position, doc in enumerate(docs):
        size = metadata_bytes(doc.metadata) if doc.metadata else 2
        if size > limits.max_metadata_bytes:
            raise PayloadTooLarge(
                f"document {position} has {size} bytes of metadata; the limit is {limits.max_metadata_bytes} "
                "(RAGSVC_STORE__MAX_METADATA_BYTES), because metadata is stored again with each of the document's "
                "chunks: keep large values in the text or in a store of your own, and reference them by key")
        for number, chunk in enumerate(doc.chunks or []):
            chunk_size = metadata_bytes(chunk.metadata) if chunk.metadata else 2
            if chunk_size > limits.max_metadata_bytes:
                raise PayloadTooLarge(
                    f"document {position}'s chunk {number} has {chunk_size} bytes of metadata; the limit is "
                    f"{limits.max_metadata_bytes} (RAGSVC_STORE__MAX_METADATA_BYTES)")


def stored_bytes(split: Sequence[SplitDocument]) -> int:
    """Bytes of text and metadata the documents and their chunks will store, a chunk's merged metadata
    counted as its document's plus its own (an upper bound on the merged JSON)."""
    total = 0
    for _, _, doc, chunks in split:
        doc_meta = metadata_bytes(doc.metadata)
        total += len(doc.text.encode("utf-8")) + doc_meta
        for _, chunk in chunks:
            total += len(chunk.text.encode("utf-8")) + doc_meta + (metadata_bytes(chunk.metadata) if chunk.metadata
                                                                    else 0)
    return total


def check_batch(split: Sequence[SplitDocument], limits: WriteLimits) -> None:
    """Refuse a batch that would store more than `max_batch_chunks` chunks or `max_write_bytes` of text and
    metadata (BatchTooLarge: the same documents may fit in smaller batches)."""
    num_chunks = sum(len(chunks) for _, _, _, chunks in split)
    if num_chunks > limits.max_batch_chunks:
        raise BatchTooLarge(
            f"this batch would be cut into {num_chunks} chunks ({len(split)} document(s)); the limit is "
            f"{limits.max_batch_chunks} (RAGSVC_STORE__MAX_BATCH_CHUNKS): send fewer or smaller documents at a "
            "time, or use a collection with longer chunks or less overlap")
    total = stored_bytes(split)
    if total > limits.max_write_bytes:
        raise BatchTooLarge(
            f"this batch would store {total} bytes of text and metadata ({len(split)} document(s) cut into "
            f"{num_chunks} chunk(s), each chunk holding its document's metadata); the limit is "
            f"{limits.max_write_bytes} (RAGSVC_STORE__MAX_WRITE_BYTES): send fewer or smaller documents at a "
            "time, or less metadata")
