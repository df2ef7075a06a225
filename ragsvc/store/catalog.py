"""The duckdb catalog: collections, documents, chunks, vectors and the embedding cache. Only SQL lives here.

Writes go through one connection guarded by a lock: duckdb allows one writing process per file, and a single
writing connection keeps transactions simple. Every ingest batch is one transaction, so a killed process
leaves either the whole batch or none of it. Reads (lookups, filters, hydration, replay) go through a cursor
per thread instead (`_read`): duckdb's MVCC gives each read a snapshot of what was committed, so reads run
in parallel with each other and with a write transaction, never queuing behind the lock.

A search's two catalog reads, its collection's record and its hits' rows, are served from bounded in-memory
caches (`read_cache.py`) that every change here invalidates after its commit: a statement costs several times
an index lookup, and both change only through this object. Chunk ids are never reused, so a cached chunk row
is only ever made wrong by a delete, which drops it; a write fills in the rows of the chunks it added. A
write's two existence questions, which of its documents are stored and which of its chunk texts are cached,
go first to Bloom filters of the tables' keys (`table_keys.py`), so a batch of new documents and new texts
asks duckdb neither.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from ragsvc.errors import (
    CollectionExists,
    CollectionNotFound,
    Conflict,
    DocumentNotFound,
    InvalidInput,
    disk_full,
    storage_full,
)
from ragsvc.index.spec import IndexSpec
from ragsvc.store.arrow import arrow_to_vectors
from ragsvc.store.document_rows import insert_chunks, insert_documents
from ragsvc.store.embedding_cache import EmbeddingCache
from ragsvc.store.filters import FilterLimits, Membership, compile_filter
from ragsvc.store.keys import KEYS_FILE, ApiKeyTable
from ragsvc.store.memories import MemoryTables
from ragsvc.store.read_cache import ReadCache
from ragsvc.store.records import CollectionRecord, PreparedDocument, WriteResult
from ragsvc.store.schema import DDL, SCHEMA_VERSION
from ragsvc.store.sessions import ChatTables
from ragsvc.store.simulation import SimulationTables
from ragsvc.store.table_keys import TableKeys
from ragsvc.store.transaction import Transaction, rollback
from ragsvc.store.vector_cache import DuckdbVectorCache

logger = logging.getLogger(__name__)

HIT_CACHE_CHUNKS = 8192
"""Chunk rows (document id, text, metadata JSON) kept for hydrating search hits: a few MB at 200-token chunks."""
HIT_CACHE_CHARS = 64 << 20
"""...and at most this many characters of them: metadata may run to `store.max_metadata_bytes` a chunk."""
RECORD_CACHE_COLLECTIONS = 4096


class Catalog:
    """The source of truth for one data directory."""

    def __init__(self, path: Path, *, hit_cache_chunks: int = HIT_CACHE_CHUNKS) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file where the folder should be, no permission, ...
            # mkdir over a file says "File exists", which reads as if the folder were fine
            reason = "it is a file, not a folder" if path.parent.is_file() else exc.strerror or exc
            raise InvalidInput(f"cannot use {path.parent} as the data directory: {reason}. Point "
                               "RAGSVC_STORE__DATA_DIR (--data-dir) at a folder this process can write") from exc
        try:
            self._conn = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():  # duckdb lets one process at a time open a database file
                raise Conflict(
                    f"cannot open the catalog {path}: {exc}. Another ragsvc process (a running `ragsvc serve`?) "
                    "holds it; stop it or send your request to its HTTP API"
                ) from exc
            raise InvalidInput(
                f"cannot open the catalog {path}: {exc}. Point RAGSVC_STORE__DATA_DIR (--data-dir) at a ragsvc "
                "data directory, or at an empty folder to start a new one"
            ) from exc
        self._lock = threading.RLock()
        self._transaction = Transaction(self._conn, self._lock)  # shared by the agent tables (see its module)
        self._local = threading.local()  # each thread's read cursor
        self._cursors: list[duckdb.DuckDBPyConnection] = []  # every read cursor, closed with the catalog
        self._cursor_lock = threading.Lock()  # guards _read_root and _cursors, never held during a statement
        self._read_root = self._conn.cursor()  # read cursors are made from this one, not from the busy writer
        self.path = path
        self._records: ReadCache[str, CollectionRecord] = ReadCache(max_items=RECORD_CACHE_COLLECTIONS)
        self._hits: ReadCache[int, tuple[str, str, str]] = ReadCache(
            max_items=hit_cache_chunks, max_bytes=HIT_CACHE_CHARS, size=lambda row: sum(map(len, row)))
        self._embedding_cache = EmbeddingCache(self._conn, self._lock, self._reader)
        self._document_keys = TableKeys(self._conn, self._lock, table="documents", columns=("collection", "id"))
        with self._lock:
            self._conn.execute(DDL)
            self._conn.execute(
                "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING", [str(SCHEMA_VERSION)]
            )

    def close(self) -> None:
        with self._lock, self._cursor_lock:
            self._flush_embedding_cache()
            for cursor in self._cursors:
                cursor.close()
            self._cursors.clear()
            self._read_root.close()
            self._conn.close()

    def _flush_embedding_cache(self) -> None:
        """Insert the embedding-cache rows small writes left in memory (embedding_cache.py). Call with the
        lock held. A failure is logged and the rows are dropped: they are cache, and closing must go on."""
        if not self._embedding_cache.num_deferred:
            return
        try:
            with self._transaction.atomic():
                self._embedding_cache.flush()
        except Exception:  # noqa: BLE001 - cache rows only; the catalog still closes
            logger.warning("the embedding cache's last rows could not be written; those texts will be embedded "
                           "again if they come back", exc_info=True)

    def _query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """A statement on the writing connection: for reads that must see the current write transaction."""
        with self._lock:
            return self._conn.execute(sql, params or []).fetchall()

    def _reader(self) -> duckdb.DuckDBPyConnection:
        """This thread's read cursor (a connection of its own to the same database; duckdb cursors are not
        safe to share between threads)."""
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            with self._cursor_lock:  # not the write lock: a thread's first read must not wait for a transaction
                cursor = self._read_root.cursor()
                self._cursors.append(cursor)
            self._local.cursor = cursor
        return cursor

    def _read(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """A read-only statement on this thread's cursor: sees committed data, takes no lock."""
        return self._reader().execute(sql, params or []).fetchall()

    # -- collections ---------------------------------------------------------------------------------------

    def create_collection(self, record: CollectionRecord) -> None:
        with self._lock:
            if self._query("SELECT 1 FROM collections WHERE name = ?", [record.name]):
                raise CollectionExists(f"collection {record.name!r} already exists; delete it first or pick a new name")
            # Each collection's index lives in a folder of its name, and on a case-insensitive file system
            # (macOS, Windows) 'Docs' and 'docs' would be one folder, each collection's index overwriting the other's.
            same = self._query("SELECT name FROM collections WHERE lower(name) = lower(?)", [record.name])
            if same:
                raise CollectionExists(
                    f"collection {same[0][0]!r} exists, and {record.name!r} differs from it only in case: their index "
                    "folders would be one on a case-insensitive file system; pick another name")
            self._conn.execute(
                "INSERT INTO collections (name, embedder_id, dim, index_spec, chunk_tokens, chunk_overlap) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [record.name, record.embedder_id, record.dim, json.dumps(record.index.to_dict()),
                 record.chunk_tokens, record.chunk_overlap],
            )
            self._records.invalidate([record.name])

    def get_collection(self, name: str) -> CollectionRecord:
        cached = self._records.get(name)
        if cached is not None:
            return cached
        generation = self._records.generation()
        rows = self._read(
            "SELECT name, embedder_id, dim, index_spec, chunk_tokens, chunk_overlap FROM collections WHERE name = ?",
            [name],
        )
        if not rows:
            raise CollectionNotFound(f"collection {name!r} does not exist; create it with POST /v1/collections",
                                     collection=name, cli_message=self._missing_for_cli(name))
        record = _collection_from_row(rows[0])
        self._records.fill({name: record}, generation=generation)
        return record

    def absent(self, name: str) -> str:
        """`collection 'x' does not exist (this data folder holds a, b)`: what the folder holds shows a typo."""
        held = [r[0] for r in self._read("SELECT name FROM collections ORDER BY name LIMIT 11")]
        holds = (f"this data folder holds {', '.join(held[:10])}{', ...' if len(held) > 10 else ''}" if held
                 else "this data folder holds no collection yet")
        return f"collection {name!r} does not exist ({holds})"

    def _missing_for_cli(self, name: str) -> str:
        """`ingest` creates a missing collection and fills it; `collections create` makes it empty."""
        return (f"{self.absent(name)}; fill it with `ragsvc ingest FILES -c {name}`, or create it empty with "
                f"`ragsvc collections create {name}`")

    def list_collections(self) -> list[CollectionRecord]:
        rows = self._read(
            "SELECT name, embedder_id, dim, index_spec, chunk_tokens, chunk_overlap FROM collections ORDER BY name"
        )
        return [_collection_from_row(r) for r in rows]

    def delete_collection(self, name: str) -> None:
        self.get_collection(name)
        with self._lock:
            self._conn.execute("BEGIN TRANSACTION")
            try:
                self._conn.execute(
                    "DELETE FROM chunk_vector_cache WHERE chunk_id IN (SELECT id FROM chunks WHERE collection = ?)",
                    [name],
                )
                for table, column in (("chunks", "collection"), ("documents", "collection"), ("collections", "name")):
                    self._conn.execute(f"DELETE FROM {table} WHERE {column} = ?", [name])
                self._conn.execute("COMMIT")
            except BaseException:
                rollback(self._conn)
                raise
            self._records.invalidate([name])
            self._hits.invalidate()

    def collection_counts(self, name: str) -> tuple[int, int]:
        """(documents, chunks) in the collection."""
        docs = self._read("SELECT count(*) FROM documents WHERE collection = ?", [name])[0][0]
        chunks = self._read("SELECT count(*) FROM chunks WHERE collection = ?", [name])[0][0]
        return int(docs), int(chunks)

    # -- documents -----------------------------------------------------------------------------------------

    def document_hashes(self, collection: str, ids: list[str] | None = None) -> dict[str, str]:
        """id -> content hash of the collection's stored documents (of `ids` only, when given; ids the key
        filter rules out are not asked for, so a batch of new documents runs no statement)."""
        if ids is None:
            rows = self._read("SELECT id, content_hash FROM documents WHERE collection = ?", [collection])
        else:
            ids = [i for i, maybe in zip(ids, self._document_keys.might_contain(collection, ids), strict=True) if maybe]
            if not ids:
                return {}
            rows = self._read(
                "SELECT id, content_hash FROM documents WHERE collection = ? AND list_contains(?, id)",
                [collection, ids],
            )
        return {r[0]: r[1] for r in rows}

    def write_documents(self, collection: str, docs: list[PreparedDocument], *, embedder_id: str,
                        stored_ids: list[str] | None = None) -> WriteResult:
        """Replace-or-insert `docs` and their chunks in one transaction; return what the indexes must apply.

        `stored_ids`: which of the documents the caller, holding the collection's writer lock, read as stored;
        only those are removed first (None: all of them are looked for), sparing a new document three statements.
        A wrong list cannot corrupt: a stored document left out fails the documents key, rolling back."""
        chunk_rows = [(d, i, c) for d in docs for i, c in enumerate(d.chunks)]
        dim = self.get_collection(collection).dim
        vectors = (
            np.stack([c.vector for _, _, c in chunk_rows]).astype(np.float32)
            if chunk_rows
            else np.zeros((0, dim), np.float32)
        )  # (n, dim)
        with self._lock:
            self._conn.execute("BEGIN TRANSACTION")
            try:
                to_remove = [d.id for d in docs] if stored_ids is None else stored_ids
                removed = self._remove_documents(collection, to_remove) if to_remove else np.zeros(0, np.int64)
                insert_documents(self._conn, collection, docs)
                self._document_keys.add(collection, [d.id for d in docs])
                ids = insert_chunks(self._conn, collection, chunk_rows, vectors)
                self._embedding_cache.insert(embedder_id, [c.text_hash for _, _, c in chunk_rows], vectors)
                self._conn.execute("COMMIT")
            except BaseException as err:
                rollback(self._conn)
                if disk_full(err):
                    raise storage_full(f"writing {len(docs)} document(s) to {collection!r}") from err
                raise
            if len(removed):
                self._hits.invalidate(removed.tolist())
            # Write-through: the new chunks' rows are what this commit stored, and fresh documents are what
            # searches under ingest tend to hit; filled under the write lock, after any invalidation.
            self._hits.fill({int(i): (d.id, c.text, json.dumps(c.metadata))
                             for i, (d, _, c) in zip(ids.tolist(), chunk_rows, strict=True)},
                            generation=self._hits.generation())
        return WriteResult(added_ids=ids, added_vectors=vectors, removed_ids=removed,
                           added_texts=tuple(c.text for _, _, c in chunk_rows))

    def delete_document(self, collection: str, document_id: str) -> np.ndarray:
        """Delete one document and its chunks; return the removed chunk ids (int64)."""
        self.get_collection(collection)
        with self._lock:
            if not self._query("SELECT 1 FROM documents WHERE collection = ? AND id = ?", [collection, document_id]):
                raise DocumentNotFound(f"document {document_id!r} is not in collection {collection!r}")
            self._conn.execute("BEGIN TRANSACTION")
            try:
                removed = self._remove_documents(collection, [document_id])
                self._conn.execute("COMMIT")
            except BaseException:
                rollback(self._conn)
                raise
            self._hits.invalidate(removed.tolist())
        return removed

    def get_document(self, collection: str, document_id: str) -> dict[str, Any]:
        rows = self._read(
            "SELECT d.id, d.source, d.content_hash, d.metadata, d.text, "
            "(SELECT count(*) FROM chunks c WHERE c.collection = d.collection AND c.document_id = d.id) "
            "FROM documents d WHERE d.collection = ? AND d.id = ?",
            [collection, document_id],
        )
        if not rows:
            self.get_collection(collection)
            raise DocumentNotFound(f"document {document_id!r} is not in collection {collection!r}")
        return _document_from_row(rows[0], with_text=True)

    def list_documents(self, collection: str, *, limit: int, offset: int) -> list[dict[str, Any]]:
        self.get_collection(collection)
        rows = self._read(
            "SELECT d.id, d.source, d.content_hash, d.metadata, NULL, "
            "(SELECT count(*) FROM chunks c WHERE c.collection = d.collection AND c.document_id = d.id) "
            "FROM documents d WHERE d.collection = ? ORDER BY d.id LIMIT ? OFFSET ?",
            [collection, limit, offset],
        )
        return [_document_from_row(r, with_text=False) for r in rows]

    def _remove_documents(self, collection: str, ids: list[str]) -> np.ndarray:
        rows = self._conn.execute(
            "SELECT id FROM chunks WHERE collection = ? AND list_contains(?, document_id)", [collection, ids]
        ).fetchall()
        self._conn.execute(
            "DELETE FROM chunks WHERE collection = ? AND list_contains(?, document_id)", [collection, ids]
        )
        if rows:
            self._conn.execute("DELETE FROM chunk_vector_cache WHERE chunk_id = any(?::BIGINT[])",
                               [[r[0] for r in rows]])
        self._conn.execute("DELETE FROM documents WHERE collection = ? AND list_contains(?, id)", [collection, ids])
        return np.array([r[0] for r in rows], dtype=np.int64)

    # -- embedding cache -----------------------------------------------------------------------------------

    def cached_vectors(self, embedder_id: str, text_hashes: list[str], dim: int) -> dict[str, np.ndarray]:
        """text hash -> (dim,) float32 for the chunk texts already embedded by `embedder_id`."""
        return self._embedding_cache.lookup(embedder_id, text_hashes, dim) if text_hashes else {}

    # -- search support ------------------------------------------------------------------------------------

    def filter_chunk_ids(self, collection: str, filter_: dict[str, Any], *, limits: FilterLimits | None = None,
                         membership: Membership = "set") -> np.ndarray:
        """Ids of the collection's chunks the filter admits (`membership="or"`: the benchmark's slow peer)."""
        where, params = compile_filter(filter_, limits=limits, membership=membership)
        table = self._reader().sql(f"SELECT id FROM chunks WHERE collection = ? AND ({where})",
                                   params=[collection, *params]).to_arrow_table()
        return table.column("id").to_numpy().astype(np.int64)

    def hydrate(self, ids: list[int]) -> dict[int, tuple[str, str, dict[str, Any]]]:
        """chunk id -> (document id, text, metadata) for the ids that still exist (cached rows first)."""
        rows = self._hits.get_many(ids)
        missing = [i for i in ids if i not in rows]
        if missing:
            generation = self._hits.generation()
            read = {r[0]: (r[1], r[2], r[3]) for r in self._read(
                "SELECT id, document_id, text, metadata FROM chunks WHERE id = any(?::BIGINT[])", [missing])}
            self._hits.fill(read, generation=generation)
            rows.update(read)
        return {i: (r[0], r[1], json.loads(r[2])) for i, r in rows.items()}

    def vector_cache(self) -> DuckdbVectorCache:
        """The per-chunk vector cache of rescoring stages (store/vector_cache.py), in this catalog's file."""
        return DuckdbVectorCache(self._conn, self._lock)

    def api_keys(self) -> ApiKeyTable:
        """API keys (store/keys.py), in this catalog's file; changes are mirrored to the keys file beside it."""
        return ApiKeyTable(self._conn, self._lock, keys_file=self.path.with_name(KEYS_FILE))

    def memory_tables(self) -> MemoryTables:
        """Agents' memory streams (store/memories.py), in this catalog's file."""
        return MemoryTables(self._conn, self._lock, transaction=self._transaction)

    def chat_tables(self) -> ChatTables:
        """The agents registry, chat sessions and turns (store/sessions.py), in this catalog's file."""
        return ChatTables(self._conn, self._lock, transaction=self._transaction)

    def simulation_tables(self) -> SimulationTables:
        """A generative-agent simulation's run and tick records (store/simulation.py), in this catalog's file."""
        return SimulationTables(self._conn, self._lock)

    def vector_source(self, collection: str) -> CatalogVectorSource:
        return CatalogVectorSource(self, collection)


class CatalogVectorSource:
    """The catalog seen by one collection's index: its vectors in chunk-id order (see ragsvc.index.source)."""

    def __init__(self, catalog: Catalog, collection: str) -> None:
        self._catalog = catalog
        self._collection = collection
        self._dim = catalog.get_collection(collection).dim

    def max_chunk_id(self) -> int:
        rows = self._catalog._read("SELECT max(id) FROM chunks WHERE collection = ?", [self._collection])
        return int(rows[0][0] or 0)

    def count(self) -> int:
        return self._catalog.collection_counts(self._collection)[1]

    def iter_vectors(self, *, after_id: int = 0, batch_size: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        cursor = after_id
        while True:
            table = self._catalog._reader().sql(
                "SELECT id, vector FROM chunks WHERE collection = ? AND id > ? ORDER BY id LIMIT ?",
                params=[self._collection, cursor, batch_size],
            ).to_arrow_table()
            if table.num_rows == 0:
                return
            ids = table.column("id").to_numpy().astype(np.int64)
            yield ids, arrow_to_vectors(table.column("vector"), self._dim)
            cursor = int(ids[-1])

    def iter_texts(self, *, after_id: int = 0, batch_size: int = 8192) -> Iterator[tuple[np.ndarray, list[str]]]:
        """(ids int64 (n,), texts) for live chunks with id > after_id, ascending: what a lexical index holds."""
        cursor = after_id
        while True:
            rows = self._catalog._read(
                "SELECT id, text FROM chunks WHERE collection = ? AND id > ? ORDER BY id LIMIT ?",
                [self._collection, cursor, batch_size])
            if not rows:
                return
            yield np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]
            cursor = int(rows[-1][0])

    def live_ids(self, *, up_to: int) -> np.ndarray:
        """Sorted int64 ids of the live chunks with id <= up_to (an index diffs them with its own after a crash)."""
        rows = self._catalog._read("SELECT id FROM chunks WHERE collection = ? AND id <= ? ORDER BY id",
                                    [self._collection, up_to])
        return np.array([r[0] for r in rows], dtype=np.int64)

    def vectors_for(self, ids: np.ndarray) -> np.ndarray:
        wanted = [int(i) for i in ids]
        table = self._catalog._reader().sql(
            "SELECT id, vector FROM chunks WHERE collection = ? AND list_contains(?, id)",
            params=[self._collection, wanted],
        ).to_arrow_table()
        found = dict(zip(table.column("id").to_pylist(), arrow_to_vectors(table.column("vector"), self._dim),
                         strict=True))
        missing = [i for i in wanted if i not in found]
        if missing:
            raise KeyError(f"chunk ids not in collection {self._collection!r}: {missing[:5]}")
        return np.stack([found[i] for i in wanted]) if wanted else np.zeros((0, self._dim), np.float32)


def _collection_from_row(row: tuple[Any, ...]) -> CollectionRecord:
    return CollectionRecord(
        name=row[0], embedder_id=row[1], dim=int(row[2]), index=IndexSpec.from_dict(json.loads(row[3])),
        chunk_tokens=int(row[4]), chunk_overlap=int(row[5]),
    )


def _document_from_row(row: tuple[Any, ...], *, with_text: bool) -> dict[str, Any]:
    doc = {"id": row[0], "source": row[1], "content_hash": row[2], "metadata": json.loads(row[3]),
           "num_chunks": int(row[5])}
    if with_text:
        doc["text"] = row[4]
    return doc
