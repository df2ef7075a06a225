"""Bounds on what one ingest batch may store, checked before anything is embedded or written.

A document's metadata is copied into each of its chunks (the chunks table holds the merged metadata, so that
filters read one row per hit), so stored bytes grow as metadata x chunks, not as the request's size. Unbounded,
a 2.8 MB request (1.9M characters of text with 0.9 MB of metadata, 3,750 chunks) wrote a 3.4 GB WAL and took
the server to 15.5 GB resident. Two limits bound it:

- `max_metadata_bytes` bounds one document's (or one given chunk's) metadata as compact UTF-8 JSON. The
  default, 40 KiB, is the per-vector metadata limit of Pinecone, whose users bring such records here.
- `max_write_bytes` bounds the text and metadata one batch stores: the documents' text and metadata, plus
  every chunk's text and merged metadata. Vectors are not counted: they follow the chunk count, which the
  text bounds. The default, 64 MiB, holds a full 16 MiB request of plain text with its chunk overlaps.

Both answer 413 naming the document and the setting to raise. Pure: no I/O.
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
    """Settings `store.max_metadata_bytes`, `store.max_write_bytes`."""

    max_metadata_bytes: int = 40_960
    max_write_bytes: int = 64 << 20

    @classmethod
    def from_settings(cls, section: StoreSettings) -> WriteLimits:
        return cls(max_metadata_bytes=section.max_metadata_bytes, max_write_bytes=section.max_write_bytes)


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


def check_stored_bytes(split: Sequence[SplitDocument], limits: WriteLimits) -> None:
    """Refuse a batch that would store more than `max_write_bytes` of text and metadata."""
    total = stored_bytes(split)
    if total > limits.max_write_bytes:
        num_chunks = sum(len(chunks) for _, _, _, chunks in split)
        raise BatchTooLarge(
            f"this batch would store {total} bytes of text and metadata ({len(split)} document(s) cut into "
            f"{num_chunks} chunk(s), each chunk holding its document's metadata); the limit is "
            f"{limits.max_write_bytes} (RAGSVC_STORE__MAX_WRITE_BYTES): send fewer or smaller documents at a "
            "time, or less metadata")
