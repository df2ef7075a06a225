"""The JSON guard's byte scan: the same verdicts as the single regex it replaced, in time linear in the body."""

from __future__ import annotations

import re
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from ragsvc.api.json_guard import _digit_run, _long_integer, _suspect, body_problem

# The scan as it was: right, but quadratic in runs of digits (each start inside a run read it again).
_OLD_SUSPECT = re.compile(rb"\\u[dD][89a-fA-F]|NaN|Infinity|[0-9][eE]\+?[0-9]{3}|[0-9]{300}")
_PIECES = [b"1", b"9" * 120, b"e", b"E", b"+", b"-", b".", b",", b" ", b"\\u", b"d8", b"DB", b"00", b"0041", b"NaN",
           b"Infin", b"ity", b"x", b"[", b"]", b"\""]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=16))
def test_the_scan_flags_what_the_old_pattern_flagged(parts):
    body = b"".join(parts)
    assert _suspect(body) == (_OLD_SUSPECT.search(body) is not None)


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
