"""One catalog connection's transaction, shared by the tables that write through that connection.

duckdb has no nested transactions: a `BEGIN` inside an open one is an error. The agent tables (memories, chat
sessions, simulation records) each write in a transaction of their own, yet some work must span several of them:
a simulation tick (memories, access times, transcript, tick record) or a chat exchange (its `chat` memory and
both turns). `atomic()` opens the one transaction such work runs in, and every table's `write()` inside it joins
that transaction instead of opening its own; outside one, `write()` is a transaction of its own.

The state is one flag behind the catalog's lock, which `atomic()` holds throughout: another thread's write waits
at the lock until the commit, so it can never join a transaction that is not its own.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import duckdb


def rollback(conn: duckdb.DuckDBPyConnection) -> None:
    """ROLLBACK after a failed statement. When the COMMIT itself failed (a full disk), duckdb has already ended
    the transaction and raises on ROLLBACK; that error would hide the one that says why, so it is dropped."""
    try:
        conn.execute("ROLLBACK")
    except duckdb.TransactionException as err:
        if "no transaction is active" not in str(err):
            raise


class Transaction:
    """The transaction of one connection, guarded by the lock every writer of that connection holds."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, lock: threading.RLock) -> None:
        self._conn = conn
        self._lock = lock
        self._open = False

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """Everything written through this connection inside the block commits together, or nothing does
        (any exception rolls it all back and propagates). Does not nest."""
        with self._lock:
            if self._open:
                raise RuntimeError("Transaction.atomic() does not nest")
            self._conn.execute("BEGIN TRANSACTION")
            self._open = True
            try:
                yield
                self._conn.execute("COMMIT")
            except BaseException:
                rollback(self._conn)
                raise
            finally:
                self._open = False

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """A transaction of one write, or nothing extra inside `atomic()` (the write joins it)."""
        with self._lock:
            if self._open:
                yield
                return
            with self.atomic():
                yield
