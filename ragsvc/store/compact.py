"""Rewriting a catalog into a fresh file, so that the space of deleted rows goes back to the disk.

duckdb reuses the blocks that deleted rows and dropped tables leave for later writes, but never gives them back
to the file system: deleting a collection of 5 GB leaves a file of 5 GB. `COPY FROM DATABASE` writes every
table, index, sequence (at its current value, which chunk and memory ids rely on: an index's watermark assumes
ids only grow) and constraint into a new file, packed. The copy is checked (each table's row count, each
sequence's value) before a rename puts it in the old file's place, so a crash or kill at any moment leaves one
whole catalog: the old one up to the rename, the new one after it. A copy left by an interrupted run is
removed by the next one.

Most of a deleted collection's space is its vectors, and they outlive it in the embedding cache (kept so that
a document sent again is not embedded again; store/embedding_cache.py). So compaction first drops the cache
rows no stored chunk's text hashes to, unless asked to keep them: losing them costs only embedding those texts
again if they ever come back.

Chunk and memory ids are copied as they are, so the ANN and lexical indexes stay valid and are not rebuilt.
duckdb lets one process open a file at a time: a running server holds its catalog, and compaction then says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ragsvc.errors import Conflict, InvalidInput, RagsvcError
from ragsvc.index.atomic import fsync_dir

COPY_SUFFIX = ".compacting"
"""The new file is written beside the catalog under its name plus this, then renamed over it."""


@dataclass(frozen=True, slots=True)
class CompactResult:
    before_bytes: int
    after_bytes: int
    rows: dict[str, int]
    """Rows per table, the same in the old file and the new one."""
    cache_rows_dropped: int
    """Embedding-cache rows of texts no stored chunk has, dropped before the copy."""


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path))
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise Conflict(f"cannot compact {path}: another process holds it ({exc}). Stop `ragsvc serve` "
                           "(or whatever uses this data directory) and run this again") from exc
        raise InvalidInput(f"cannot open {path} as a catalog: {exc}") from exc


def _rows(conn: duckdb.DuckDBPyConnection, database: str) -> dict[str, int]:
    tables = [r[0] for r in conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? ORDER BY table_name", [database]).fetchall()]
    return {t: int(conn.execute(f'SELECT count(*) FROM "{database}"."main"."{t}"').fetchone()[0])  # type: ignore[index]
            for t in tables}


def _sequences(conn: duckdb.DuckDBPyConnection, database: str) -> dict[str, int | None]:
    return {r[0]: r[1] for r in conn.execute(
        "SELECT sequence_name, last_value FROM duckdb_sequences() WHERE database_name = ?", [database]).fetchall()}


def _drop_unused_cache(conn: duckdb.DuckDBPyConnection) -> int:
    """Delete the embedding-cache rows whose text no chunk has (a chunk's text hash is sha256 of its text, as
    ingest computes it); returns how many."""
    before = int(conn.execute("SELECT count(*) FROM embedding_cache").fetchone()[0])  # type: ignore[index]
    conn.execute("DELETE FROM embedding_cache WHERE text_hash NOT IN (SELECT DISTINCT sha256(text) FROM chunks)")
    return before - int(conn.execute("SELECT count(*) FROM embedding_cache").fetchone()[0])  # type: ignore[index]


def _left(dropped: int) -> str:
    """What a compaction that stopped before its rename left (the unused cache rows go first, committed)."""
    if not dropped:
        return "the catalog was left unchanged"
    return f"the catalog keeps every row but the {dropped} cached vectors of texts no chunk has, already dropped"


def compact(path: Path, *, keep_cache: bool = False) -> CompactResult:
    """Rewrite the catalog at `path` packed, in place (see the module docstring); `keep_cache`: keep the
    embedding-cache rows of texts no stored chunk has."""
    if not path.is_file():
        raise InvalidInput(f"there is no catalog at {path}; point --data-dir at a ragsvc data directory")
    copy = path.with_name(path.name + COPY_SUFFIX)
    for leftover in (copy, _wal(copy)):  # from a run that was stopped before its rename
        leftover.unlink(missing_ok=True)
    conn = _connect(path)
    dropped = 0
    try:
        database = str(conn.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
        conn.execute("CHECKPOINT")  # the WAL's rows into the file, so the size below is the file's
        before = path.stat().st_size
        dropped = 0 if keep_cache else _drop_unused_cache(conn)
        rows = _rows(conn, database)
        sequences = _sequences(conn, database)
        conn.execute("ATTACH ? AS compacted", [str(copy)])
        try:
            conn.execute(f'COPY FROM DATABASE "{database}" TO compacted')
            copied_rows, copied_sequences = _rows(conn, "compacted"), _sequences(conn, "compacted")
        finally:
            conn.execute("DETACH compacted")
    except duckdb.Error as exc:  # a full disk, most likely: the copy needs room for every live row
        for partial in (copy, _wal(copy)):
            partial.unlink(missing_ok=True)
        raise RagsvcError(f"compacting {path} failed ({type(exc).__name__}: {exc}); {_left(dropped)}. The copy "
                          "needs free disk space for all the live rows beside the catalog") from exc
    finally:
        conn.close()
    if copied_rows != rows or copied_sequences != sequences:
        copy.unlink(missing_ok=True)
        raise RagsvcError(f"the compacted copy of {path} differs from it (rows {copied_rows} against {rows}, "
                          f"sequences {copied_sequences} against {sequences}); {_left(dropped)}")
    if _wal(path).exists() or _wal(copy).exists():  # a clean close leaves none; one now would be replayed wrongly
        copy.unlink(missing_ok=True)
        raise RagsvcError(f"{path} still has a write-ahead log after closing; {_left(dropped)}")
    with open(copy, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(copy, path)
    fsync_dir(path.parent)  # the rename itself, durable
    return CompactResult(before_bytes=before, after_bytes=path.stat().st_size, rows=rows,
                         cache_rows_dropped=dropped)
