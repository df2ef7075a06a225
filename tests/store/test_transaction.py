"""The catalog's shared transaction: writes of the memory, chat and simulation tables inside `atomic()` join it
and commit together or not at all; outside one each write is its own transaction; it does not nest."""

from __future__ import annotations

import numpy as np
import pytest

from ragsvc.store.catalog import Catalog
from ragsvc.store.memories import NewMemory
from ragsvc.store.sessions import NewTurn


def _exchange(catalog: Catalog, session: str) -> int:
    memories, chat = catalog.memory_tables(), catalog.chat_tables()
    (memory_id,) = memories.append("ada", [NewMemory("chat", "Sam: hi / Ada: hello", 1.0)], np.ones((1, 4), np.float32))
    chat.append_exchange(session, [NewTurn("user", "hi", 0.0, 1.0), NewTurn("agent", "hello", 0.0, 1.0)],
                         observation_id=int(memory_id))
    return int(memory_id)


def _counts(catalog: Catalog, session: str) -> tuple[int, int]:
    return catalog.memory_tables().count("ada"), len(catalog.chat_tables().turns(session))


def test_a_memory_and_turns_commit_together_or_not_at_all(tmp_path):
    catalog = Catalog(tmp_path / "catalog.duckdb")
    try:
        catalog.chat_tables().create_agent("ada", {"name": "Ada"}, created_s=0.0)
        session = catalog.chat_tables().create_session("ada", user="Sam", created_s=0.0, start_h=0.0).id
        with pytest.raises(KeyError), catalog.memory_tables().atomic():
            _exchange(catalog, session)
            assert _counts(catalog, session) == (1, 2)  # visible inside the transaction
            raise KeyError("crash before the commit")
        assert _counts(catalog, session) == (0, 0)
        with catalog.memory_tables().atomic():
            kept = _exchange(catalog, session)
        assert _counts(catalog, session) == (1, 2)
        assert {t.observation_id for t in catalog.chat_tables().turns(session)} == {kept}
        outer, inner = catalog.memory_tables(), catalog.memory_tables()  # two tables, one catalog transaction
        with pytest.raises(RuntimeError, match="does not nest"), outer.atomic(), inner.atomic():
            pass
        _exchange(catalog, session)  # outside atomic(): each table's write is a transaction of its own
        assert _counts(catalog, session) == (2, 4)
    finally:
        catalog.close()


def test_the_transaction_survives_a_reopen_only_when_committed(tmp_path):
    catalog = Catalog(tmp_path / "catalog.duckdb")
    catalog.chat_tables().create_agent("ada", {"name": "Ada"}, created_s=0.0)
    session = catalog.chat_tables().create_session("ada", user="Sam", created_s=0.0, start_h=0.0).id
    with catalog.memory_tables().atomic():
        _exchange(catalog, session)
    with pytest.raises(KeyError), catalog.memory_tables().atomic():
        _exchange(catalog, session)
        raise KeyError("crash")
    catalog.close()
    catalog = Catalog(tmp_path / "catalog.duckdb")
    try:
        assert _counts(catalog, session) == (1, 2)
    finally:
        catalog.close()
