"""Cut a parsed file into one chunk per definition, so a search hit is a whole function, method or class.

- A function or method is its full text: leading doc comments, decorators, signature, docstring, body.
- A class (or impl, interface) that holds methods is a skeleton: its own text with each method replaced by its
  signature and `...`, since the methods are chunks of their own.
- A definition longer than `max_chunk_chars` is split between statements of its body; every later part starts
  with the signature so it still says what it belongs to.
- Top-level code outside definitions (constants, scripts) becomes `module` chunks, split the same way.
"""

from __future__ import annotations

import textwrap
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING

from ragsvc.code.parser import ParsedFile
from ragsvc.code.tags import Definition, FileTags, body_node

if TYPE_CHECKING:
    from tree_sitter import Node

_COMMENT_TYPES = ("comment", "line_comment", "block_comment")


@dataclass(frozen=True, slots=True)
class ChunkConfig:
    max_chunk_chars: int = 1600
    """About 400 code tokens: the embedder (MiniLM reads 256 word pieces) sees the head of each part."""
    strip_docstrings: bool = False
    """Drop Python docstrings from chunk text (the docstring -> function benchmark queries with them)."""
    module_chunks: bool = True
    """Also chunk top-level code that is not inside any definition."""

    def __post_init__(self) -> None:
        if self.max_chunk_chars < 200:
            raise ValueError(f"max_chunk_chars must be at least 200, got {self.max_chunk_chars}")


@dataclass(frozen=True, slots=True)
class CodeChunk:
    """One chunk: its text, its span in the file (bytes and 1-based lines) and what it is."""

    text: str
    start_byte: int
    end_byte: int
    start_line: int
    end_line: int
    symbol: str
    kind: str
    part: int = 1
    num_parts: int = 1


def chunk_file(parsed: ParsedFile, tags: FileTags, *, config: ChunkConfig = ChunkConfig()) -> list[CodeChunk]:
    """Chunks for every definition (and leftover top-level code), in file order."""
    chunks: list[CodeChunk] = []
    children: dict[str | None, list[Definition]] = {}
    for definition in tags.definitions:
        children.setdefault(definition.parent, []).append(definition)
    for definition in tags.definitions:
        chunks.extend(_definition_chunks(parsed, definition, children.get(definition.symbol, []), config))
    if config.module_chunks:
        chunks.extend(_module_chunks(parsed, children.get(None, []), config))
    chunks.sort(key=lambda c: (c.start_byte, -c.end_byte))
    return chunks


def _node_at(parsed: ParsedFile, start: int, end: int) -> Node:
    """The outermost node spanning exactly the definition's bytes."""
    node = parsed.tree.root_node.descendant_for_byte_range(start, end)
    if node is None:  # the bytes come from tags of this same tree, so a node always covers them
        raise RuntimeError(f"no node covers bytes {start}..{end} of {parsed.rel_path}")
    parent = node.parent
    while parent is not None and (node.start_byte, node.end_byte) == (parent.start_byte, parent.end_byte):
        node, parent = parent, parent.parent
    return node


def _leading_comment_start(node: Node) -> int:
    """Start byte of the doc comments directly above `node` (no blank line between), else the node's start."""
    start, line = node.start_byte, node.start_point[0]
    sibling = node.prev_named_sibling
    while sibling is not None and sibling.type in _COMMENT_TYPES and sibling.end_point[0] >= line - 1:
        start, line = sibling.start_byte, sibling.start_point[0]
        sibling = sibling.prev_named_sibling
    return start


def _python_docstring(node: Node) -> tuple[int, int] | None:
    body = body_node(node)
    if body is None or not body.named_children:
        return None
    first = body.named_children[0]
    # Grammar versions differ: the docstring is a bare `string` in the block, or wrapped in an expression statement.
    if first.type == "string" or (
        first.type == "expression_statement" and first.named_children and first.named_children[0].type == "string"
    ):
        return first.start_byte, first.end_byte
    return None


def _definition_chunks(
    parsed: ParsedFile, definition: Definition, members: list[Definition], config: ChunkConfig
) -> list[CodeChunk]:
    node = _node_at(parsed, definition.start_byte, definition.end_byte)
    start = _leading_comment_start(node) if parsed.language != "python" else definition.start_byte
    # Replace each member with its signature; drop the docstring when asked.
    cuts = [(m.start_byte, m.end_byte, _member_stub(parsed, m)) for m in members]
    if config.strip_docstrings and parsed.language == "python":
        inner = node.child_by_field_name("definition") or node  # a decorated_definition wraps the def
        doc = _python_docstring(inner)
        if doc is not None:
            cuts.append((doc[0], doc[1], ""))
    text = _assemble(parsed, start, definition.end_byte, cuts)
    if len(text) <= config.max_chunk_chars or members:
        pieces = [text] if len(text) <= config.max_chunk_chars else _split_lines(text, config.max_chunk_chars)
        return _as_parts(parsed, definition, start, pieces, definition.signature)
    segments = list(_statement_segments(parsed, node, start, definition.end_byte, config, cuts))
    return [
        _chunk(parsed, definition, seg_start, seg_end,
               seg_text if i == 0 else _continued(definition.signature, seg_text), part=i + 1, num_parts=len(segments))
        for i, (seg_start, seg_end, seg_text) in enumerate(segments)
    ]


def _member_stub(parsed: ParsedFile, member: Definition) -> str:
    return f"{member.signature} ..."


def _line_start(parsed: ParsedFile, byte: int) -> int:
    """`byte` moved back over the indentation before it, so chunk text keeps its first line's indent."""
    line_start = parsed.data.rfind(b"\n", 0, byte) + 1
    return line_start if not parsed.data[line_start:byte].strip() else byte


def _assemble(parsed: ParsedFile, start: int, end: int, cuts: list[tuple[int, int, str]]) -> str:
    """The file's text from `start` to `end` with the (non-overlapping) cut ranges replaced, dedented."""
    start = _line_start(parsed, start)
    out: list[str] = []
    position = start
    for cut_start, cut_end, replacement in sorted(c for c in cuts if start <= c[0] and c[1] <= end):
        out.append(parsed.data[position:cut_start].decode("utf-8", errors="replace"))
        out.append(replacement)
        position = cut_end
    out.append(parsed.data[position:end].decode("utf-8", errors="replace"))
    return textwrap.dedent("".join(out))


def _statement_segments(
    parsed: ParsedFile, node: Node, start: int, end: int, config: ChunkConfig, cuts: list[tuple[int, int, str]]
) -> Iterator[tuple[int, int, str]]:
    """Pieces of a long definition, each ending on a statement boundary of its body (lines as a last resort)."""
    body = body_node(node)
    statements = body.named_children if body is not None else []
    # The header (signature, docstring) stays with the first statement: a boundary before each later one.
    bounds = [s.start_byte for s in statements[1:] if start < s.start_byte < end] + [end]
    spans: list[tuple[int, int]] = []
    seg_start, fits_until = start, None
    for bound in bounds:
        if len(_assemble(parsed, seg_start, bound, cuts)) <= config.max_chunk_chars:
            fits_until = bound
            continue
        close = fits_until if fits_until is not None else bound  # one statement alone over the limit
        spans.append((seg_start, close))
        seg_start, fits_until = close, None
        if close != bound:
            if len(_assemble(parsed, seg_start, bound, cuts)) <= config.max_chunk_chars:
                fits_until = bound
            else:
                spans.append((seg_start, bound))
                seg_start = bound
    if seg_start < end:
        spans.append((seg_start, end))
    for span_start, span_end in spans:
        for piece in _split_lines(_assemble(parsed, span_start, span_end, cuts), config.max_chunk_chars):
            yield span_start, span_end, piece


def _continued(signature: str, piece: str) -> str:
    """A later part of a split definition: the signature, then the piece indented under it."""
    return f"{signature}\n{textwrap.indent(piece, '    ')}"


def _split_lines(text: str, max_chars: int) -> list[str]:
    pieces: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        if current and len(current) + len(line) > max_chars:
            pieces.append(current)
            current = ""
        current += line[: max_chars * 2]  # a single absurd line (minified code) is clipped, not looped on
    if current.strip():
        pieces.append(current)
    return pieces or [text[:max_chars]]


def _as_parts(parsed: ParsedFile, d: Definition, start: int, pieces: list[str], signature: str) -> list[CodeChunk]:
    return [
        _chunk(parsed, d, start, d.end_byte, p if i == 0 else _continued(signature, p),
               part=i + 1, num_parts=len(pieces))
        for i, p in enumerate(pieces)
    ]


def _chunk(
    parsed: ParsedFile, d: Definition, start: int, end: int, text: str, *, part: int, num_parts: int
) -> CodeChunk:
    return CodeChunk(
        text=text,
        start_byte=start,
        end_byte=end,
        start_line=parsed.line_number(start),
        end_line=parsed.line_number(start + len(parsed.data[start:end].rstrip()) - 1),
        symbol=d.symbol,
        kind=d.kind,
        part=part,
        num_parts=num_parts,
    )


def _module_chunks(parsed: ParsedFile, top_level: list[Definition], config: ChunkConfig) -> list[CodeChunk]:
    """Top-level statements that no definition covers, grouped into pieces under the size limit."""
    # A definition's doc comments belong to its chunk, not to the module's.
    covered = _Spans([(_leading_comment_start(_node_at(parsed, d.start_byte, d.end_byte)), d.end_byte)
                      for d in top_level])
    groups: list[list[Node]] = [[]]
    for child in parsed.tree.root_node.named_children:
        if covered.any_around(child.start_byte, child.end_byte) or covered.any_within(child.start_byte,
                                                                                       child.end_byte):
            groups.append([])  # a definition breaks the run of top-level code
            continue
        groups[-1].append(child)
    module = Definition(parsed.rel_path, "<module>", "<module>", "module", 0, 0, 0, 0, "", None)
    chunks: list[CodeChunk] = []
    for group in (g for g in groups if g and not all(n.type in _COMMENT_TYPES for n in g)):
        start, end = group[0].start_byte, group[-1].end_byte
        text = _assemble(parsed, start, end, [])
        if not text.strip():
            continue
        pieces = _split_lines(text, config.max_chunk_chars)
        chunks.extend(_chunk(parsed, module, start, end, p, part=i + 1, num_parts=len(pieces))
                      for i, p in enumerate(pieces))
    return chunks


class _Spans:
    """Byte spans, asked whether one lies around or within a given span, each in O(log n): asked for every
    top-level statement against every top-level definition, a scan of all of them is quadratic (40 s for a
    file of 20,000 definitions). Exact for any spans, overlapping or not: one starts at or before `start` and ends
    at or after `end` iff the largest end among those starting at or before `start` is; likewise, one lies
    within iff the smallest end among those starting at or after `start` is at most `end`."""

    def __init__(self, spans: list[tuple[int, int]]) -> None:
        spans = sorted(spans)
        self._starts = [s for s, _ in spans]
        self._max_end_up_to = list(accumulate((e for _, e in spans), max))
        self._min_end_from = list(accumulate((e for _, e in reversed(spans)), min))[::-1]

    def any_around(self, start: int, end: int) -> bool:
        i = bisect_right(self._starts, start)
        return i > 0 and self._max_end_up_to[i - 1] >= end

    def any_within(self, start: int, end: int) -> bool:
        i = bisect_left(self._starts, start)
        return i < len(self._starts) and self._min_end_from[i] <= end
