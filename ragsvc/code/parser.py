"""Parse one source file with tree-sitter, keeping whatever it can and saying what went wrong.

tree-sitter recovers from syntax errors (ERROR and MISSING nodes around the bad spot, real nodes elsewhere), so a
file with a typo still yields its other definitions. Invalid UTF-8 is replaced (U+FFFD) before parsing, so the
byte offsets tree-sitter reports always refer to the text we store.
"""

from __future__ import annotations

import logging
import re
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ragsvc.code.languages import get_parser

if TYPE_CHECKING:
    from tree_sitter import Node, Tree

logger = logging.getLogger(__name__)

_MAX_REPORTED_ERRORS = 5


@dataclass(frozen=True, slots=True)
class ParsedFile:
    """A parsed file. `data` is the UTF-8 text tree-sitter saw; `problems` lists what was not clean."""

    rel_path: str
    language: str
    text: str
    data: bytes
    tree: Tree
    problems: tuple[str, ...] = field(default_factory=tuple)
    newlines: tuple[int, ...] = field(default=(), compare=False, repr=False)
    """Byte offsets of every newline in `data`, so a chunk's line numbers cost a lookup, not a count from the
    file's start (quadratic in a file's definitions)."""

    def line_number(self, byte_offset: int) -> int:
        """1-based line of a byte offset in `data`."""
        return bisect_left(self.newlines, byte_offset) + 1

    def node_text(self, node: Node) -> str:
        return self.data[node.start_byte : node.end_byte].decode("utf-8")

    def char_offset(self, byte_offset: int) -> int:
        """Character index in `text` of a byte offset in `data` (they differ once a non-ASCII char appears)."""
        if len(self.data) == len(self.text):
            return byte_offset
        return len(self.data[:byte_offset].decode("utf-8", errors="ignore"))


def decode_source(raw: bytes) -> tuple[str, list[str]]:
    """Text of a file; invalid UTF-8 is replaced and reported with the first bad byte's offset."""
    try:
        return raw.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        return raw.decode("utf-8", errors="replace"), [f"invalid UTF-8 at byte {exc.start}; replaced with U+FFFD"]


def parse_text(text: str, *, language: str, rel_path: str = "<text>", problems: list[str] | None = None) -> ParsedFile:
    """Parse `text` as `language`; syntax errors are listed in `problems`, never raised."""
    data = text.encode("utf-8")
    tree = get_parser(language).parse(data)
    found = list(problems or [])
    if tree.root_node.has_error:
        found.extend(_syntax_errors(tree.root_node))
    newlines = tuple(m.start() for m in re.finditer(b"\n", data))
    return ParsedFile(rel_path=rel_path, language=language, text=text, data=data, tree=tree, problems=tuple(found),
                      newlines=newlines)


def parse_file(path: Path, *, language: str, rel_path: str) -> ParsedFile:
    """Read and parse a file. OSError propagates: the caller records the file as unreadable and moves on."""
    text, problems = decode_source(path.read_bytes())
    parsed = parse_text(text, language=language, rel_path=rel_path, problems=problems)
    if parsed.problems:
        logger.info("parsed %s with problems: %s", rel_path, "; ".join(parsed.problems))
    return parsed


def _syntax_errors(root: Node) -> list[str]:
    """Line numbers of the first few ERROR / MISSING nodes, found by walking only subtrees that contain one."""
    errors: list[str] = []
    stack = [root]
    while stack and len(errors) < _MAX_REPORTED_ERRORS:
        node = stack.pop()
        if node.is_missing:
            errors.append(f"syntax error: missing {node.type!r} at line {node.start_point[0] + 1}")
        elif node.is_error:
            errors.append(f"syntax error at line {node.start_point[0] + 1}")
        elif node.has_error:
            stack.extend(reversed(node.children))
    return errors or ["syntax error (tree-sitter recovered)"]
