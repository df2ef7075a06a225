"""Inserting rows into a duckdb table in the cheapest form for their number.

A live ingest writes one document, one chunk and one cache row; a bulk load writes hundreds. duckdb's two ways
to take them cost differently at each end: an Arrow table registered as a view has a fixed cost of a few
statements (register, scan, unregister) and then runs in bulk, while one `INSERT ... VALUES (?, ...), (?, ...)`
binds every value from Python (each vector as a list of floats) but costs one statement. Up to `MAX_VALUES_ROWS`
rows go as VALUES (`few`), more as Arrow; both run on the caller's connection, inside its transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

MAX_VALUES_ROWS = 8
"""Rows inserted as one VALUES statement; more go through Arrow (measured: VALUES wins below about 16 rows of
a 384-wide vector, and loses several times over at 64)."""


def insert_values(conn: duckdb.DuckDBPyConnection, head: str, row_sql: str, rows: Sequence[Sequence[Any]], *,
                  tail: str = "") -> list[tuple[Any, ...]]:
    """`head VALUES row_sql, row_sql, ... tail` with every row's values bound in order; returns what a
    RETURNING `tail` gives (else nothing)."""
    if not rows:
        return []
    params = [value for row in rows for value in row]
    result = conn.execute(f"{head} VALUES {', '.join([row_sql] * len(rows))} {tail}", params)
    return result.fetchall() if "RETURNING" in tail.upper() else []


def insert_arrow(conn: duckdb.DuckDBPyConnection, table: pa.Table, name: str, sql: str,
                 params: Sequence[Any] = ()) -> None:
    """Run `sql`, which reads the view `name`, with `table` registered under that name for the statement."""
    conn.register(name, table)
    try:
        conn.execute(sql, list(params))
    finally:
        conn.unregister(name)


def few(num_rows: int) -> bool:
    """Whether `num_rows` rows go as one VALUES statement rather than through Arrow."""
    return num_rows <= MAX_VALUES_ROWS
