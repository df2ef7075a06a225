"""Which tree-sitter grammar parses which file, and loading those grammars from tree-sitter-language-pack.

The language pack's 0.x wheels ship every grammar compiled inside the wheel; its 1.x line downloads grammars
from the internet on first use, which these machines (and air-gapped users) cannot do. We therefore only ask the
pack for a language it can give without a download, and say how to fix it otherwise.
"""

from __future__ import annotations

import functools
from pathlib import PurePath
from typing import TYPE_CHECKING, TypeGuard

from ragsvc.errors import NotReady

if TYPE_CHECKING:
    from tree_sitter import Language, Parser
    from tree_sitter_language_pack import SupportedLanguage

# Extension -> grammar name in tree-sitter-language-pack. `.h` goes to C++ because the C++ grammar also parses
# C headers well, while the C grammar fails on every class in a C++ header.
EXTENSION_LANGUAGES: dict[str, str] = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".jsx": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".c": "c",
    ".h": "cpp",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".hh": "cpp",
    ".hxx": "cpp",
}

SUPPORTED_LANGUAGES: tuple[str, ...] = tuple(sorted(set(EXTENSION_LANGUAGES.values())))


def language_for_path(path: PurePath | str) -> str | None:
    """Grammar name for a file path by its extension, or None when we do not index that kind of file."""
    return EXTENSION_LANGUAGES.get(PurePath(path).suffix.lower())


def _is_indexed(name: str) -> TypeGuard[SupportedLanguage]:
    return name in SUPPORTED_LANGUAGES


@functools.cache
def get_language(name: str) -> Language:
    """The compiled grammar for `name`, loaded once per process."""
    if not _is_indexed(name):
        raise ValueError(f"language {name!r} is not indexed; supported: {', '.join(SUPPORTED_LANGUAGES)}")
    import tree_sitter_language_pack as pack  # imported on first use: loading the pack maps a large library

    downloaded = getattr(pack, "downloaded_languages", None)
    if downloaded is not None and name not in downloaded():
        # 1.x of the pack would try to download the grammar here and hang or fail without a network.
        raise NotReady(
            f"tree-sitter grammar {name!r} is not available offline; install a language pack that bundles "
            "its grammars: pip install 'tree-sitter-language-pack>=0.9,<1'"
        )
    return pack.get_language(name)


def get_parser(name: str) -> Parser:
    """A fresh parser for `name` (parsers keep state, so each thread or call gets its own)."""
    from tree_sitter import Parser

    return Parser(get_language(name))
