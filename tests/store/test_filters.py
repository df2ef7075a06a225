"""Filters compiled to SQL and run on a real duckdb table of JSON metadata."""

import json
import os

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


MIXED = {
    "num": {"v": 2022, "flag": True, "tag": "x"},
    "numtext": {"v": "2022", "flag": "yes", "tag": 5},
    "one": {"v": 1, "flag": 1, "tag": "5"},
    "list": {"v": [2022], "flag": False},
    "none": {"v": None},
    "missing": {},
}


@pytest.fixture()
def mixed():
    conn = duckdb.connect()
    conn.execute("CREATE TABLE t (id VARCHAR, metadata JSON)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [[k, json.dumps(v)] for k, v in MIXED.items()])
    return conn


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        # a value matches only values of its own JSON type
        ({"v": 2022}, ["num"]),
        ({"v": "2022"}, ["numtext"]),
        ({"v": {"$gt": 2000}}, ["num"]),
        ({"v": {"$gt": "2000"}}, ["numtext"]),
        ({"flag": True}, ["num"]),
        ({"flag": 1}, ["one"]),
        ({"flag": {"$gt": False}}, ["num"]),
        ({"tag": 5}, ["numtext"]),
        ({"tag": "5"}, ["one"]),
        ({"v": {"$in": [2022, True]}}, ["num"]),
        ({"tag": {"$in": ["5", "x"]}}, ["num", "one"]),
        # $ne and $nin negate $eq and $in exactly: missing fields and other types match
        ({"v": {"$ne": 2022}}, ["list", "missing", "none", "numtext", "one"]),
        ({"v": {"$nin": [2022]}}, ["list", "missing", "none", "numtext", "one"]),
        ({"absent": {"$ne": 1}}, sorted(MIXED)),
        ({"flag": {"$ne": True}}, ["list", "missing", "none", "numtext", "one"]),
        # null is a null or missing field
        ({"v": None}, ["missing", "none"]),
        ({"v": {"$ne": None}}, ["list", "num", "numtext", "one"]),
        ({"v": {"$in": [None, 1]}}, ["missing", "none", "one"]),
    ],
)
def test_values_match_only_their_own_type_and_negations_are_exact(mixed, filter_, expected):
    for membership in ("set", "or"):
        where, params = compile_filter(filter_, membership=membership)
        got = sorted(r[0] for r in mixed.execute(f"SELECT id FROM t WHERE {where}", params).fetchall())
        assert got == expected, (membership, got)


def test_strings_match_whatever_their_characters():
    """A string is compared as JSON text on both sides, so escapes in the stored JSON (Python writes non-ASCII
    as \\u escapes) cannot make equal strings differ."""
    texts = ["café", 'say "hi"', "back\\slash", "a/b", "tab\there", "line\u2028sep", "emoji 😀", "ctl\x01", "", "null"]
    conn = duckdb.connect()
    conn.execute("CREATE TABLE t (id INTEGER, metadata JSON)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [[i, json.dumps({"s": t}, ensure_ascii=i % 2 == 0)]
                                                    for i, t in enumerate(texts)])
    for i, text in enumerate(texts):
        assert _ids(conn, {"s": text}) == [i], text
    assert _ids(conn, {"s": {"$in": texts}}) == list(range(len(texts)))


def test_null_takes_only_eq_and_ne():
    with pytest.raises(InvalidInput, match=r"must be a string, number or boolean for \$gt, got null"):
        compile_filter({"v": {"$gt": None}})


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


TAGGED = [{"tags": ["a", "b"]}, {"tags": ["b"]}, {"tags": "a"}, {"tags": []}, {"tags": [1, "a", True]},
          {"tags": [["a"]]}, {}]


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"tags": {"$contains": "a"}}, [0, 4]),  # a list holding "a"; the plain string "a" is no list
        ({"tags": {"$contains": "b"}, "x": None}, [0, 1]),
        ({"tags": {"$contains": 1}}, [4]),
        ({"tags": {"$contains": 1.0}}, [4]),
        ({"tags": {"$contains": True}}, [4]),
        ({"tags": {"$contains": "z"}}, []),
        ({"tags": "a"}, [2]),  # $eq compares the field itself, as before
    ],
)
def test_contains_matches_a_list_field_holding_the_value(filter_, expected):
    conn = duckdb.connect()
    conn.execute("CREATE TABLE t (id INTEGER, metadata JSON)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [[i, json.dumps(r)] for i, r in enumerate(TAGGED)])
    where, params = compile_filter(filter_)
    assert sorted(r[0] for r in conn.execute(f"SELECT id FROM t WHERE {where}", params).fetchall()) == expected
    assert [i for i, r in enumerate(TAGGED) if _reference(r, filter_)] == expected


@pytest.mark.parametrize("value", [None, ["a"], {"a": 1}])
def test_contains_takes_one_scalar(value):
    with pytest.raises(InvalidInput, match=r"\$contains on 'tags' takes a string, number or boolean"):
        compile_filter({"tags": {"$contains": value}})


def _reference(metadata: dict, filter_: dict) -> bool:
    """Mongo's matching rules, written plainly: what the SQL must agree with."""
    def same_type(stored, value) -> bool:
        if isinstance(value, bool):
            return isinstance(stored, bool)
        if isinstance(value, int | float):
            return isinstance(stored, int | float) and not isinstance(stored, bool)
        return isinstance(stored, str)

    def test(present: bool, stored, op: str, value) -> bool:
        if op in ("$ne", "$nin"):
            return not test(present, stored, "$eq" if op == "$ne" else "$in", value)
        if op == "$contains":
            return isinstance(stored, list) and any(
                not isinstance(e, list | dict) and test(True, e, "$eq", value) for e in stored)
        if op == "$in":
            return any(test(present, stored, "$eq", v) for v in value)
        if value is None:
            return not present or stored is None
        if not present or not same_type(stored, value):
            return False
        if isinstance(value, int | float) and not isinstance(value, bool):
            stored, value = float(stored), float(value)
        return {"$eq": stored == value, "$gt": stored > value, "$gte": stored >= value, "$lt": stored < value,
                "$lte": stored <= value}[op]

    for field, condition in filter_.items():
        conditions = condition.items() if isinstance(condition, dict) else [("$eq", condition)]
        if not all(test(field in metadata, metadata.get(field), op, v) for op, v in conditions):
            return False
    return True


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20),
                     st.floats(allow_nan=False, allow_infinity=False, width=32), st.text(max_size=6))
_keys = st.sampled_from(["a", "b", "a.b", "x-y"])
_stored = st.one_of(_scalars, st.lists(_scalars, max_size=2),
                    st.dictionaries(st.text(max_size=2), _scalars, max_size=2))
_condition = st.one_of(
    _scalars,
    st.dictionaries(st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]), _scalars, min_size=1, max_size=2),
    st.dictionaries(st.sampled_from(["$in", "$nin"]), st.lists(_scalars, min_size=1, max_size=4), min_size=1,
                    max_size=1),
    st.fixed_dictionaries({"$contains": st.one_of(st.booleans(), st.integers(-(10**20), 10**20),
                                                   st.floats(allow_nan=False, allow_infinity=False, width=32),
                                                   st.text(max_size=6))}),
)


@settings(max_examples=int(os.environ.get("RAGSVC_FILTER_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.dictionaries(_keys, _stored, max_size=3), min_size=1, max_size=6),
       filter_=st.dictionaries(_keys, _condition, min_size=1, max_size=2))
def test_sql_matches_the_plain_reference_on_random_metadata(rows, filter_):
    if any(v is None for c in filter_.values() if isinstance(c, dict)
           for op, v in c.items() if op not in ("$eq", "$ne", "$in", "$nin")):
        return  # ranges take no null (refused; tested above)
    conn = duckdb.connect()
    conn.execute("CREATE TABLE t (id INTEGER, metadata JSON)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [[i, json.dumps(r)] for i, r in enumerate(rows)])
    expected = [i for i, r in enumerate(rows) if _reference(r, filter_)]
    for membership in ("set", "or"):
        where, params = compile_filter(filter_, membership=membership)
        got = sorted(r[0] for r in conn.execute(f"SELECT id FROM t WHERE {where}", params).fetchall())
        assert got == expected, (membership, rows, filter_)
