"""Filters compiled to SQL and run on a real duckdb table of JSON metadata."""

import json

import duckdb
import pytest

from ragsvc.errors import InvalidInput
from ragsvc.store.filters import compile_filter

ROWS = [
    {"lang": "python", "year": 2020, "draft": False, "tag": "a"},
    {"lang": "go", "year": 2022, "draft": True, "tag": "b"},
    {"lang": "python", "year": 2024, "draft": False},
    {"lang": "rust", "year": 2019.5, "tag": None},
]


@pytest.fixture()
def table():
    conn = duckdb.connect()
    conn.execute("CREATE TABLE t (id INTEGER, metadata JSON)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [[i, json.dumps(r)] for i, r in enumerate(ROWS)])
    return conn


def _ids(conn, filter_):
    where, params = compile_filter(filter_)
    return sorted(r[0] for r in conn.execute(f"SELECT id FROM t WHERE {where}", params).fetchall())


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"lang": "python"}, [0, 2]),
        ({"lang": {"$ne": "python"}}, [1, 3]),
        ({"year": {"$gte": 2020, "$lt": 2024}}, [0, 1]),
        ({"year": {"$lte": 2019.5}}, [3]),
        ({"lang": {"$in": ["go", "rust"]}}, [1, 3]),
        ({"lang": {"$nin": ["go", "rust"]}}, [0, 2]),
        ({"draft": True}, [1]),
        ({"lang": "python", "year": {"$gt": 2021}}, [2]),
        ({"tag": None}, [2, 3]),
        ({"missing": "x"}, []),
    ],
)
def test_filter_selects_matching_rows(table, filter_, expected):
    assert _ids(table, filter_) == expected


@pytest.mark.parametrize(
    ("filter_", "message"),
    [
        ({"year": {"$regex": "x"}}, "unknown filter operator"),
        ({"lang": {"$in": []}}, "non-empty list"),
        ({"a'); DROP TABLE t; --": 1}, "not a valid metadata key"),
        ({"lang": {}}, "has no operator"),
        ({"lang": [1, 2]}, "must be a string, number"),
        ({"$or": [{"lang": "python"}, {"lang": "go"}]}, r"'\$or' is not supported at the top: .* \$in"),
    ],
)
def test_bad_filters_are_refused_with_a_reason(table, filter_, message):
    with pytest.raises(InvalidInput, match=message):
        compile_filter(filter_)
    assert table.execute("SELECT count(*) FROM t").fetchone()[0] == len(ROWS)
