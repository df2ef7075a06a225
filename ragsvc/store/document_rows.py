"""The rows one ingest transaction adds: documents, and chunks with their ids and vectors. SQL only.

Both run on the catalog's writing connection inside its open transaction (Catalog.write_documents). Few rows
go as one VALUES statement, many through Arrow (`row_insert.py`); a few chunks take their ids from the
sequence inside that same statement (`nextval` per row, handed back by RETURNING), many in one query first.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from ragsvc.store.arrow import vectors_to_arrow
from ragsvc.store.records import PreparedChunk, PreparedDocument
from ragsvc.store.row_insert import few, insert_arrow, insert_values

ChunkRow = tuple[PreparedDocument, int, PreparedChunk]
"""A chunk to store: its document, its ordinal in the document, the chunk."""


def insert_documents(conn: duckdb.DuckDBPyConnection, collection: str, docs: list[PreparedDocument]) -> None:
    if few(len(docs)):
        insert_values(conn, "INSERT INTO documents (collection, id, source, content_hash, metadata, text)",
                      "(?, ?, ?, ?, ?, ?)",
                      [(collection, d.id, d.source, d.content_hash, json.dumps(d.metadata), d.text) for d in docs])
        return
    table = pa.table({
        "id": pa.array([d.id for d in docs], pa.string()),
        "source": pa.array([d.source for d in docs], pa.string()),
        "content_hash": pa.array([d.content_hash for d in docs], pa.string()),
        "metadata": pa.array([json.dumps(d.metadata) for d in docs], pa.string()),
        "text": pa.array([d.text for d in docs], pa.string()),
    })
    insert_arrow(conn, table, "incoming_documents",
                 "INSERT INTO documents (collection, id, source, content_hash, metadata, text) "
                 "SELECT ?, id, source, content_hash, metadata::JSON, text FROM incoming_documents", [collection])


def insert_chunks(conn: duckdb.DuckDBPyConnection, collection: str, rows: list[ChunkRow],
                  vectors: np.ndarray) -> np.ndarray:
    """Insert `rows` with their (n, dim) float32 `vectors`; return their new ids (n,) int64, in row order
    (fresh from the sequence, so above every id stored before)."""
    if not rows:
        return np.zeros(0, np.int64)
    if few(len(rows)):
        values: list[tuple[Any, ...]] = [
            (collection, d.id, i, c.text, c.start_char, c.end_char, json.dumps(c.metadata), v.tolist())
            for (d, i, c), v in zip(rows, vectors, strict=True)]
        returned = insert_values(conn, "INSERT INTO chunks", "(nextval('chunk_ids'), ?, ?, ?, ?, ?, ?, ?::JSON, ?)",
                                 values, tail="RETURNING id, document_id, ordinal")
        by_row = {(doc_id, ordinal): chunk_id for chunk_id, doc_id, ordinal in returned}
        return np.array([by_row[(d.id, i)] for d, i, _ in rows], dtype=np.int64)
    found = conn.execute("SELECT nextval('chunk_ids') FROM range(?)", [len(rows)]).fetchall()
    ids = np.array(sorted(r[0] for r in found), dtype=np.int64)
    table = pa.table({
        "id": pa.array(ids, pa.int64()),
        "document_id": pa.array([d.id for d, _, _ in rows]),
        "ordinal": pa.array([i for _, i, _ in rows], pa.int32()),
        "text": pa.array([c.text for _, _, c in rows]),
        "start_char": pa.array([c.start_char for _, _, c in rows], pa.int32()),
        "end_char": pa.array([c.end_char for _, _, c in rows], pa.int32()),
        "metadata": pa.array([json.dumps(c.metadata) for _, _, c in rows]),
        "vector": vectors_to_arrow(vectors),
    })
    insert_arrow(conn, table, "incoming_chunks",
                 "INSERT INTO chunks SELECT id, ?, document_id, ordinal, text, start_char, end_char, "
                 "metadata::JSON, vector FROM incoming_chunks", [collection])
    return ids
