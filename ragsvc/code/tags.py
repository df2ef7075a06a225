"""Definition and reference tags of a parsed file, from the per-language tree-sitter queries.

A definition knows its kind (a function inside a class or impl becomes a method), its qualified symbol
(`Outer.method`), its line span, its signature (the text before the body) and the node span the chunker cuts.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragsvc.code.languages import get_language
from ragsvc.code.parser import ParsedFile
from ragsvc.code.queries import TAG_QUERIES

if TYPE_CHECKING:
    from tree_sitter import Node, Query

CONTAINER_KINDS = frozenset({"class", "interface", "impl"})
# Parents that belong to a definition's text: decorators, `export`, Rust attributes sit outside the def node.
_WRAPPER_TYPES = frozenset({"decorated_definition", "export_statement", "template_declaration"})
_MAX_SIGNATURE_CHARS = 240


@dataclass(frozen=True, slots=True)
class Definition:
    """A named definition. Lines are 1-based and inclusive; bytes index into `ParsedFile.data`."""

    rel_path: str
    name: str
    symbol: str
    kind: str
    start_line: int
    end_line: int
    start_byte: int
    end_byte: int
    signature: str
    parent: str | None = None


@dataclass(frozen=True, slots=True)
class Reference:
    rel_path: str
    name: str
    kind: str
    line: int


@dataclass(frozen=True, slots=True)
class FileTags:
    rel_path: str
    language: str
    definitions: tuple[Definition, ...]
    references: tuple[Reference, ...]


MAX_ERROR_CHILDREN = 10_000
"""A file is not tagged when one syntax error holds more tokens than this: tree-sitter's query engine takes time
quadratic in an ERROR node's children (100,000 unclosed `[` took 13 s; a 1 MB file of them, about 20 minutes of
the repository job). Broken real code has small error nodes."""


class TagsTooCostly(Exception):
    """The file's syntax tree would make the tag query run for minutes; chunk it without tags."""


@functools.cache
def _query(language: str) -> Query:
    """The language's tag query, compiled once per process."""
    from tree_sitter import Query

    return Query(get_language(language), TAG_QUERIES[language])


def extract_tags(parsed: ParsedFile) -> FileTags:
    """Definitions (outermost first, by position) and references of one parsed file. TagsTooCostly when a
    syntax error holds more than MAX_ERROR_CHILDREN tokens."""
    from tree_sitter import QueryCursor

    widest = _widest_error(parsed.tree.root_node)
    if widest > MAX_ERROR_CHILDREN:
        raise TagsTooCostly(f"a syntax error spans {widest} tokens (more than {MAX_ERROR_CHILDREN})")

    raw_defs: list[tuple[Node, Node, str]] = []  # (definition node, name node, kind)
    refs: list[Reference] = []
    def_name_spans: set[tuple[int, int]] = set()
    ref_nodes: list[tuple[Node, str]] = []
    for _, captures in QueryCursor(_query(parsed.language)).matches(parsed.tree.root_node):
        for capture, nodes in captures.items():
            if capture.startswith("name.definition."):
                kind = capture.removeprefix("name.definition.")
                def_nodes = captures.get(f"definition.{kind}", [])
                if def_nodes:
                    raw_defs.append((def_nodes[0], nodes[0], kind))
                    def_name_spans.add((nodes[0].start_byte, nodes[0].end_byte))
            elif capture.startswith("name.reference."):
                ref_nodes.extend((n, capture.removeprefix("name.reference.")) for n in nodes)
    seen: set[tuple[int, int]] = set()
    for node, kind in ref_nodes:
        span = (node.start_byte, node.end_byte)
        if span in def_name_spans or span in seen:  # a definition's own name is not a reference to it
            continue
        seen.add(span)
        refs.append(Reference(parsed.rel_path, _short_name(parsed.node_text(node)), kind, node.start_point[0] + 1))
    refs.sort(key=lambda r: (r.line, r.name))
    return FileTags(parsed.rel_path, parsed.language, tuple(_nest(parsed, raw_defs)), tuple(refs))


def _span_node(node: Node) -> Node:
    parent = node.parent
    while parent is not None and parent.type in _WRAPPER_TYPES:
        node, parent = parent, parent.parent
    return node


def _short_name(text: str) -> str:
    # `Foo::bar`, `ns::Foo::~Foo`, `a.b` -> the last component, the name references use.
    return re.split(r"::|\.", text.strip())[-1]


def _nest(parsed: ParsedFile, raw_defs: list[tuple[Node, Node, str]]) -> list[Definition]:
    """Give each definition its enclosing definition: a stack over definitions sorted by start, widest first."""
    unique: dict[tuple[int, int], tuple[Node, Node, Node, str]] = {}
    for node, name_node, kind in raw_defs:
        span = _span_node(node)  # decorators and `export` belong to the definition's chunk
        unique.setdefault((span.start_byte, span.end_byte), (span, node, name_node, kind))
    ordered = sorted(unique.items(), key=lambda item: (item[0][0], -item[0][1]))
    stack: list[tuple[int, Definition]] = []  # (end byte, definition)
    out: list[Definition] = []
    for (start, end), (span, node, name_node, kind) in ordered:
        while stack and stack[-1][0] <= start:
            stack.pop()
        parent = stack[-1][1] if stack else None
        if kind == "function" and parent is not None and parent.kind in CONTAINER_KINDS | {"interface"}:
            kind = "method"
        name = _short_name(parsed.node_text(name_node))
        definition = Definition(
            rel_path=parsed.rel_path,
            name=name,
            symbol=f"{parent.symbol}.{name}" if parent is not None else name,
            kind=kind,
            start_line=span.start_point[0] + 1,
            end_line=node.end_point[0] + 1,
            start_byte=start,
            end_byte=end,
            signature=signature_of(parsed, node),
            parent=parent.symbol if parent is not None else None,
        )
        out.append(definition)
        stack.append((end, definition))
    return out


def body_node(node: Node) -> Node | None:
    """The block holding a definition's statements, looking through wrappers (decorators, `const f = () => {}`)."""
    frontier = [node]
    for _ in range(4):
        found = next((n.child_by_field_name("body") for n in frontier if n.child_by_field_name("body")), None)
        if found is not None:
            return found
        frontier = [c for n in frontier for c in n.named_children]
    return None


def signature_of(parsed: ParsedFile, node: Node) -> str:
    """The definition's text up to its body, on one line: `def f(x: int) -> str:`, `class A(B):`."""
    body = body_node(node)
    end = body.start_byte if body is not None else node.end_byte
    head = parsed.data[node.start_byte : end].decode("utf-8", errors="replace")
    if body is None:
        head = head.splitlines()[0] if head else head
    marker = "#" if parsed.language == "python" else "//"
    head = "\n".join(line.split(f" {marker}", 1)[0] for line in head.splitlines())  # trailing line comments
    one_line = " ".join(head.split())
    one_line = re.sub(r"([(\[{<]) ", r"\1", re.sub(r",? ([)\]}>])", r"\1", one_line))  # `f( a, b, )` -> `f(a, b)`
    if len(one_line) > _MAX_SIGNATURE_CHARS:
        one_line = one_line[: _MAX_SIGNATURE_CHARS - 3] + "..."
    return one_line


def _widest_error(root: Node) -> int:
    """The most children of any ERROR node, visiting only subtrees that contain an error (iteratively: syntax
    trees can be deeper than Python's recursion limit)."""
    if not root.has_error:
        return 0
    widest = 0
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type == "ERROR":
            widest = max(widest, node.child_count)
        stack.extend(child for child in node.children if child.has_error)
    return widest
