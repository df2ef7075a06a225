"""The error tree: every class answers with its own `code` and an HTTP error status, and the tree drawn in
ragsvc/errors.py's docstring is the real one (every class, under its real parent, with its real status)."""

from __future__ import annotations

import re

import ragsvc.errors
from ragsvc.errors import RagsvcError

_TREE_LINE = re.compile(r"^(?P<prefix>[ │├└─]*)(?P<name>[A-Z]\w+)(?: \((?P<status>\d{3})\))?")


def _error_classes() -> list[type[RagsvcError]]:
    found: list[type[RagsvcError]] = []
    stack: list[type[RagsvcError]] = [RagsvcError]
    while stack:
        cls = stack.pop()
        if cls.__module__.startswith("ragsvc"):
            found.append(cls)
        stack.extend(cls.__subclasses__())
    return found


def _drawn_tree() -> dict[str, tuple[str | None, int | None]]:
    """Class name -> (parent name, status) as the docstring draws them: the block of lines from the one that
    starts with RagsvcError to the next blank line; each level of the tree indents a name by 4 more columns, and
    a line without a name (a description's continuation) is skipped."""
    lines = (ragsvc.errors.__doc__ or "").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("RagsvcError"))
    root_indent = len(lines[start]) - len(lines[start].lstrip())
    drawn: dict[str, tuple[str | None, int | None]] = {}
    path: list[str] = []
    for line in lines[start:]:
        if not line.strip():
            break
        match = _TREE_LINE.match(line)
        if match is None:
            continue
        depth = (len(match["prefix"]) - root_indent) // 4
        del path[depth:]
        drawn[match["name"]] = (path[-1] if path else None, int(match["status"]) if match["status"] else None)
        path.append(match["name"])
    return drawn


def test_every_error_has_its_own_code_and_an_error_status() -> None:
    classes = _error_classes()
    codes = [cls.code for cls in classes]
    assert len(set(codes)) == len(codes), sorted(codes)
    assert all(400 <= cls.status_code <= 599 for cls in classes), {c.__name__: c.status_code for c in classes}


def test_the_docstring_draws_every_class_under_its_parent_with_its_status() -> None:
    drawn = _drawn_tree()
    classes = _error_classes()
    assert sorted(drawn) == sorted(cls.__name__ for cls in classes)
    for cls in classes:
        parent, status = drawn[cls.__name__]
        assert parent == (None if cls is RagsvcError else cls.__mro__[1].__name__), cls.__name__
        assert status is None or status == cls.status_code, cls.__name__


def test_the_tree_parser_reads_the_drawn_shape() -> None:
    drawn = _drawn_tree()
    assert drawn["RagsvcError"] == (None, 500)
    assert drawn["DimensionMismatch"] == ("InvalidInput", 400)
    assert drawn["CollectionNotFound"] == ("NotFound", None)
    assert drawn["UpstreamTimeout"] == ("UpstreamError", 504)
