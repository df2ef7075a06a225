"""Filter cost bounds: `$in` as a set (same rows as OR-ing equalities), and limits on values and clauses."""

from __future__ import annotations

import json

import duckdb
import pytest

from ragsvc.errors import InvalidInput, PayloadTooLarge
from ragsvc.store.filters import FilterLimits, compile_filter

ROWS = [{"tag": f"t{i % 50}", "n": i % 7, "flag": i % 3 == 0} for i in range(400)]
ROWS += [{"tag": None, "n": "3"}, {"other": 1}, {"tag": 5, "n": 2.5}]


@pytest.fixture()
def table():
    conn = duckdb.connect()
    conn.execute("CREATE TABLE t (id INTEGER, metadata JSON)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [[i, json.dumps(r)] for i, r in enumerate(ROWS)])
    return conn


def _ids(conn, filter_, **options):
    where, params = compile_filter(filter_, **options)
    return sorted(r[0] for r in conn.execute(f"SELECT id FROM t WHERE {where}", params).fetchall())


@pytest.mark.parametrize("values", [
    ["t1", "t7", "nope"], [1, 3.0, 6], [True], ["t2", 5, None, False, "t2"], [None], [2.5, "t49"],
])
@pytest.mark.parametrize("op", ["$in", "$nin"])
def test_set_membership_selects_what_or_ing_equalities_selects(table, values, op):
    field = "n" if isinstance(values[0], int | float) and not isinstance(values[0], bool) else "tag"
    filter_ = {field: {op: values}} if values != [True] else {"flag": {op: values}}
    expected = _ids(table, filter_, membership="or")
    assert _ids(table, filter_) == expected
    assert expected, "each case matches some rows"


def test_a_25k_value_in_matches_exactly_the_listed_rows(table):
    values = [f"t{i}" for i in range(0, 50_000, 2)]  # 25k values, t0 t2 ... among them
    got = _ids(table, {"tag": {"$in": values}})
    assert got == [i for i, r in enumerate(ROWS) if isinstance(r.get("tag"), str) and int(r["tag"][1:]) % 2 == 0]


def test_lists_and_clause_counts_past_the_limits_are_refused():
    limits = FilterLimits(max_clauses=3, max_in_values=10)
    with pytest.raises(PayloadTooLarge, match=r"lists 11 values; the limit is 10 \(RAGSVC_STORE__MAX_FILTER_VALUES"):
        compile_filter({"tag": {"$in": list(range(11))}}, limits=limits)
    compile_filter({"tag": {"$in": list(range(10))}}, limits=limits)
    with pytest.raises(InvalidInput, match="filter has 4 comparisons; the limit is 3"):
        compile_filter({"a": 1, "b": 2, "c": {"$gt": 1, "$lt": 5}}, limits=limits)
    with pytest.raises(PayloadTooLarge):
        compile_filter({"tag": {"$nin": ["x"] * 32_769}})


def test_a_field_name_with_a_trailing_newline_is_refused():
    with pytest.raises(InvalidInput, match="not a valid metadata key"):
        compile_filter({"tag\n": "x"})
