"""Metadata filters -> a duckdb WHERE clause over a JSON metadata column. Pure: no connection here.

Grammar (Mongo-like, what users of vector stores already know):
    {"lang": "python"}                       equality
    {"year": {"$gte": 2020, "$lt": 2024}}    numeric range
    {"tag": {"$in": ["a", "b"]}}             membership ($nin for the opposite)
    operators: $eq $ne $gt $gte $lt $lte $in $nin; several keys are ANDed.
"""

from __future__ import annotations

import re
from typing import Any

from ragsvc.errors import InvalidInput

_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
_COMPARE = {"$eq": "=", "$ne": "<>", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
OPERATORS = (*_COMPARE, "$in", "$nin")


def compile_filter(filter_: dict[str, Any], *, column: str = "metadata") -> tuple[str, list[Any]]:
    """Return (sql, params) where sql is a boolean expression; raise InvalidInput naming what is wrong."""
    if not isinstance(filter_, dict):
        raise InvalidInput("filter must be a JSON object such as {\"lang\": \"python\"}")
    clauses: list[str] = []
    params: list[Any] = []
    for field, condition in filter_.items():
        if not isinstance(field, str) or not _FIELD.match(field):
            raise InvalidInput(f"filter field {field!r} is not a valid metadata key (letters, digits, _ . -)")
        path = f'$."{field}"'
        if isinstance(condition, dict):
            if not condition:
                raise InvalidInput(f"filter on {field!r} has no operator; use one of {', '.join(OPERATORS)}")
            for op, value in condition.items():
                sql, p = _clause(column, path, field, op, value)
                clauses.append(sql)
                params.extend(p)
        else:
            sql, p = _clause(column, path, field, "$eq", condition)
            clauses.append(sql)
            params.extend(p)
    return (" AND ".join(clauses) if clauses else "TRUE"), params


def _clause(column: str, path: str, field: str, op: str, value: Any) -> tuple[str, list[Any]]:
    if op in ("$in", "$nin"):
        if not isinstance(value, list) or not value:
            raise InvalidInput(f"{op} on {field!r} needs a non-empty list of values")
        parts = [_clause(column, path, field, "$eq", v) for v in value]
        sql = "(" + " OR ".join(s for s, _ in parts) + ")"
        params = [x for _, p in parts for x in p]
        return (sql if op == "$in" else f"NOT COALESCE({sql}, FALSE)"), params
    if op not in _COMPARE:
        raise InvalidInput(f"unknown filter operator {op!r} on {field!r}; use one of {', '.join(OPERATORS)}")
    sql_op = _COMPARE[op]
    if isinstance(value, bool):
        return f"TRY_CAST(json_extract_string({column}, ?) AS BOOLEAN) {sql_op} ?", [path, value]
    if isinstance(value, int | float):
        return f"TRY_CAST(json_extract_string({column}, ?) AS DOUBLE) {sql_op} ?", [path, float(value)]
    if isinstance(value, str):
        return f"json_extract_string({column}, ?) {sql_op} ?", [path, value]
    if value is None and op in ("$eq", "$ne"):
        neg = "" if op == "$eq" else "NOT "
        return f"{neg}(json_extract({column}, ?) IS NULL OR json_type(json_extract({column}, ?)) = 'NULL')", [
            path,
            path,
        ]
    raise InvalidInput(f"filter value for {field!r} must be a string, number, boolean or null, got {value!r}")
