"""The JSON guard's byte scan: the same verdicts as the single regex it replaced, in time linear in the body."""

from __future__ import annotations

import json
import re
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from ragsvc.api.json_guard import _constant_words, _digit_run, _long_integer, _overflow, _surrogate_escape, body_problem

# The scan as it was: right, but quadratic in runs of digits (each start inside a run read it again).
_OLD_SUSPECT = re.compile(rb"\\u[dD][89a-fA-F]|NaN|Infinity|[0-9][eE]\+?[0-9]{3}|[0-9]{300}")
_PIECES = [b"1", b"9" * 120, b"e", b"E", b"+", b"-", b".", b",", b" ", b"\\u", b"d8", b"DB", b"00", b"0041", b"NaN",
           b"Infin", b"ity", b"x", b"[", b"]", b"\""]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=16))
def test_the_scan_flags_what_the_old_pattern_flagged(parts):
    body = b"".join(parts)
    suspect = _surrogate_escape(body) or _constant_words(body) or _overflow(body)  # body_problem's three scans
    assert suspect == (_OLD_SUSPECT.search(body) is not None)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.sampled_from([b",", b"x", b" "])), max_size=12),
       st.integers(1, 30))
def test_digit_runs_are_found_where_a_regex_finds_them(runs, length):
    body = b"".join(b"7" * n + sep for n, sep in runs)
    found = re.search(rb"[0-9]{%d,}" % length, body)
    assert _digit_run(body, length) == (None if found is None else (found.start(), len(found.group())))


def test_a_long_integer_behind_many_shorter_ones_is_named_with_its_place():
    limit = sys.get_int_max_str_digits()
    body = b"[" + (b"1" * limit + b",") * 200 + b"2" * (limit + 1) + b"]"
    assert _long_integer(body) == (f"body: a number at byte {body.index(b'2')} has {limit + 1} digits; JSON numbers "
                                   f"are read up to {limit} digits here. Send a value that long as a string")
    assert body_problem(body) == _long_integer(body)
    assert body_problem(b"[" + (b"1" * 299 + b",") * 2000 + b"1]") is None  # runs short of 300 digits: not parsed


def _old_find_problem(document):
    """The walk as it was (every path spelt out, last child first): the oracle for a single planted problem."""
    stack = [("body", document)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                return f"{where[:200]}: holds a lone UTF-16 surrogate at character {exc.start}; send valid Unicode text"
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                return f"{where[:200]}: numbers must be finite (JSON has no NaN or Infinity); got {value}"
        elif isinstance(value, dict):
            for key, item in value.items():
                try:
                    key.encode("utf-8")
                except UnicodeEncodeError as exc:
                    return (f"{where[:200]}: a key holds a lone UTF-16 surrogate at character {exc.start}; "
                            "send valid Unicode text")
                stack.append((f"{where}.{key}", item))
        elif isinstance(value, list):
            stack.extend((f"{where}.{i}", item) for i, item in enumerate(value))
    return None


_LEAVES = st.one_of(st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3),
                    st.booleans(), st.none())
_DOCUMENTS = st.recursive(_LEAVES, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                         st.dictionaries(st.text(max_size=3), kids, max_size=4)),
                          max_leaves=20)


def _plant(document, bad, path):
    """`document` with one value (or, for a dict, one key) along `path` replaced by `bad`."""
    if not path or not isinstance(document, dict | list) or not document:
        return bad
    step, rest = path[0], path[1:]
    if isinstance(document, list):
        i = step % len(document)
        return [*document[:i], _plant(document[i], bad, rest), *document[i + 1:]]
    keys = list(document)
    key = keys[step % len(keys)]
    if not rest and isinstance(bad, str):  # a bad key
        return {(bad if k == key else k): v for k, v in document.items()}
    return {k: (_plant(v, bad, rest) if k == key else v) for k, v in document.items()}


@settings(max_examples=400, deadline=None)
@given(_DOCUMENTS, st.sampled_from([float("nan"), float("inf"), "\ud800", "a\udc00"]),
       st.lists(st.integers(0, 9), max_size=5))
def test_the_walk_names_a_single_problem_as_the_old_walk_did(document, bad, path):
    from ragsvc.api.json_guard import find_problem

    planted = _plant(document, bad, path)
    assert find_problem(planted) == _old_find_problem(planted)
    assert find_problem(document) is None


def test_a_large_body_costs_no_walk_unless_it_is_refused_and_then_a_bounded_one():
    many = [1] * 400_000
    assert body_problem(json.dumps(["NaN", "Infinity", *many]).encode()) is None  # the words, in strings only
    assert body_problem(json.dumps(["\U0001F600", *many]).encode()) is None  # an escaped pair, not a lone half
    small = body_problem(b'{"a": [1, NaN]}')
    assert small == "body.a.1: numbers must be finite (JSON has no NaN or Infinity); got nan"
    big = (json.dumps(many)[:-1] + ", NaN]").encode()
    assert len(big) > 1 << 20 and body_problem(big) == "body: numbers must be finite (JSON has no NaN or Infinity)"
    far = (json.dumps(many)[:-1] + ', "\\ud800"]').encode()  # the 400,001st value: past the named ones
    assert body_problem(far) == ("body: a text holds a lone UTF-16 surrogate; send valid Unicode text (in a value "
                                 "past the first 100,000 of the document)")
    near = (json.dumps(many[:50_000])[:-1] + ", 1e999]").encode()
    assert body_problem(near) == "body.50000: numbers must be finite (JSON has no NaN or Infinity); got inf"


def test_a_document_too_deep_for_the_encoders_check_is_refused_as_such():
    from ragsvc.api.json_guard import problem_kind

    deep: list = []
    inner = deep
    for _ in range(sys.getrecursionlimit() * 4):  # deeper than the C encoder recurses
        inner.append([])
        inner = inner[0]
    assert problem_kind(deep) == ("JSON nested too deeply to check (near the parser's recursion limit); send a "
                                  "flatter document")
    assert problem_kind([["fine", 1.5, {"k": "\U0001F600"}]]) is None
