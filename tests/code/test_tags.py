"""Real tree-sitter parses of the polyglot fixture: definitions, references and line spans per language."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragsvc.code.languages import language_for_path
from ragsvc.code.parser import parse_file, parse_text
from ragsvc.code.tags import FileTags, extract_tags


def _tags(root: Path, rel: str) -> FileTags:
    path = root / rel
    language = language_for_path(path)
    assert language is not None
    return extract_tags(parse_file(path, language=language, rel_path=rel))


def _defs(tags: FileTags) -> list[tuple[str, str, int, int]]:
    return [(d.symbol, d.kind, d.start_line, d.end_line) for d in tags.definitions]


def _refs(tags: FileTags) -> set[tuple[str, int]]:
    return {(r.name, r.line) for r in tags.references}


EXPECTED_DEFS = {
    "pkg/core.py": [("normalize", "function", 6, 8), ("leaf_helper", "function", 11, 14),
                    ("Retrier", "class", 17, 30), ("Retrier.__init__", "method", 20, 21),
                    ("Retrier.run", "method", 23, 30)],
    "web/api.ts": [("Client", "interface", 1, 3), ("HttpClient", "class", 5, 9),
                   ("HttpClient.fetch", "method", 6, 8), ("normalizeUrl", "function", 11, 13),
                   ("makeClient", "function", 15, 15)],
    "web/util.js": [("Cache", "class", 1, 5), ("Cache.getOr", "method", 2, 4), ("memo", "function", 7, 10)],
    "go/server.go": [("Server", "type", 4, 6), ("Handle", "method", 9, 11), ("Join", "function", 13, 15)],
    "rs/lib.rs": [("Point", "class", 2, 5), ("Shape", "interface", 7, 9), ("Shape.area", "method", 8, 8),
                  ("Point", "impl", 11, 15), ("Point.norm", "method", 12, 14), ("square", "function", 17, 19)],
    "java/Greeter.java": [("Greeter", "class", 3, 14), ("Greeter.Greeter", "method", 6, 8),
                          ("Greeter.greet", "method", 11, 13)],
    "c/buf.c": [("buffer", "class", 3, 6), ("grow", "function", 8, 10), ("buffer_reserve", "function", 12, 15)],
    "c/shape.hpp": [("Circle", "class", 3, 6), ("area", "function", 8, 10)],
}

EXPECTED_REFS = {
    "pkg/core.py": {("Base", 17), ("normalize", 29), ("cache", 11)},
    "pkg/app.py": {("normalize", 5), ("Retrier", 6), ("run", 7), ("normalize", 11)},
    "web/api.ts": {("normalizeUrl", 7), ("HttpClient", 15), ("Client", 5)},
    "web/util.js": {("Map", 1), ("Cache", 8), ("getOr", 9)},
    "go/server.go": {("Join", 10), ("Server", 9)},
    "rs/lib.rs": {("square", 13)},
    "java/Greeter.java": {("join", 12), ("Named", 3)},
    "c/buf.c": {("grow", 13), ("realloc", 13), ("buffer", 12)},
    "c/shape.hpp": {("Shape", 3), ("compute", 9)},
}


@pytest.mark.parametrize("rel", sorted(EXPECTED_DEFS))
def test_definitions_and_line_spans(polyglot: Path, rel: str) -> None:
    assert _defs(_tags(polyglot, rel)) == EXPECTED_DEFS[rel]


@pytest.mark.parametrize("rel", sorted(EXPECTED_REFS))
def test_references(polyglot: Path, rel: str) -> None:
    tags = _tags(polyglot, rel)
    assert EXPECTED_REFS[rel] <= _refs(tags)
    defined_at = {(d.name, d.start_line) for d in tags.definitions if d.kind != "impl"}
    assert not defined_at & _refs(tags), "a definition's own name must not count as a reference"


def test_signatures_stop_at_the_body(polyglot: Path) -> None:
    signatures = {d.symbol: d.signature for d in _tags(polyglot, "pkg/core.py").definitions}
    assert signatures["Retrier"] == "class Retrier(Base):"
    assert signatures["leaf_helper"] == "def leaf_helper(value):"  # the decorator is in the chunk, not here
    go = {d.symbol: d.signature for d in _tags(polyglot, "go/server.go").definitions}
    assert go["Handle"] == "func (s *Server) Handle(path string) string"


def test_syntax_error_parses_partially_and_is_reported(polyglot: Path) -> None:
    path = polyglot / "pkg" / "broken.py"
    parsed = parse_file(path, language="python", rel_path="pkg/broken.py")
    assert any(p.startswith("syntax error") and "line 5" in p for p in parsed.problems)
    names = [d.name for d in extract_tags(parsed).definitions]
    assert "good_before" in names and "good_after" in names


def test_invalid_utf8_is_replaced_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "latin1.py"
    path.write_bytes(b"def caf\xe9():\n    return 1\n\ndef ok():\n    return caf()\n")
    parsed = parse_file(path, language="python", rel_path="latin1.py")
    assert parsed.problems[0] == "invalid UTF-8 at byte 7; replaced with U+FFFD"
    assert "\ufffd" in parsed.text
    assert [d.name for d in extract_tags(parsed).definitions][-1] == "ok"


def test_empty_and_garbage_input_never_crash() -> None:
    assert extract_tags(parse_text("", language="go")).definitions == ()
    garbage = parse_text("}{)(][ fn fn fn <<<>>> ;;; \x00", language="rust")
    assert garbage.problems  # reported, not raised
    extract_tags(garbage)
