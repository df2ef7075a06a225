"""Walk a repository: the source files worth indexing, and why every other file was left out.

Rules, in order: refuse a root outside the configured roots; skip folders that hold vendored code or build
output; honour every `.gitignore` on the way down (git's own matching rules, via pathspec); skip files whose
language we do not parse, files over the size limit and binaries (a NUL byte in the first block); follow
symlinks only when they stay inside the root, and never into a folder already visited (loops). Only regular
files are opened, without blocking (`regular_files`): a named pipe called `x.py` or a `.gitignore` linked to a
device is skipped and listed, not read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from ragsvc.code.languages import language_for_path
from ragsvc.errors import InvalidInput
from ragsvc.regular_files import open_regular, read_regular
from ragsvc.store.files import utf8_name
from ragsvc.types import MAX_DOCUMENT_ID_CHARS

logger = logging.getLogger(__name__)

DEFAULT_SKIP_DIRS: frozenset[str] = frozenset(
    {
        ".git", ".hg", ".svn", "node_modules", "bower_components", "vendor", "third_party", "third-party",
        "__pycache__", ".venv", "venv", ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache",
        "site-packages", "build", "dist", "target", "out", ".next", ".gradle", ".idea", ".eggs",
    }
)
_BINARY_SNIFF_BYTES = 8192
DEFAULT_MAX_FILE_BYTES = 1_000_000
MAX_IGNORE_BYTES = 256 * 1024
"""A larger .gitignore is not read: every file walked is matched against each of its patterns."""


@dataclass(frozen=True, slots=True)
class WalkConfig:
    """What the walker indexes. Built from settings at the edge; tests pass their own."""

    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    """Larger files are mostly generated (minified bundles, tables) and would crowd out real code."""
    skip_dirs: frozenset[str] = DEFAULT_SKIP_DIRS
    """Folder names never entered (vendored dependencies, caches, build output)."""
    allowed_roots: tuple[Path, ...] | None = None
    """A repository must lie under one of these; None allows any readable folder (CLI use)."""
    follow_symlinks: bool = True
    """Symlinks that resolve inside the root are followed; loops and escapes are always refused."""

    def __post_init__(self) -> None:
        if self.max_file_bytes < 1:
            raise ValueError(f"max_file_bytes must be positive, got {self.max_file_bytes}")


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file to parse: absolute path, its path relative to the root (posix, the id everywhere), language."""

    path: Path
    rel_path: str
    language: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Skipped:
    rel_path: str
    reason: str


@dataclass(slots=True)
class WalkResult:
    root: Path
    files: list[SourceFile] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def resolve_root(path: str | Path, *, allowed_roots: tuple[Path, ...] | None = None) -> Path:
    """The repository folder as an absolute real path; InvalidInput (HTTP 400) when missing or not allowed."""
    root = Path(path).expanduser()
    if not root.exists():
        raise InvalidInput(f"repository path {str(path)!r} does not exist; pass an existing folder")
    if not root.is_dir():
        raise InvalidInput(f"repository path {str(path)!r} is not a folder; pass the repository's root folder")
    root = root.resolve()
    if allowed_roots is not None and not any(root.is_relative_to(a.resolve()) for a in allowed_roots):
        allowed = ", ".join(str(a) for a in allowed_roots) or "(none configured)"
        raise InvalidInput(
            f"repository path {str(root)!r} is outside the allowed roots ({allowed}); "
            "move it under one of them or add its parent to the allowed roots"
        )
    return root


def walk_repository(root: str | Path, *, config: WalkConfig = WalkConfig()) -> WalkResult:
    """Every indexable source file under `root`, sorted by relative path, plus what was skipped and why."""
    real_root = resolve_root(root, allowed_roots=config.allowed_roots)
    result = WalkResult(root=real_root)
    for item in _walk(real_root, config):
        if isinstance(item, SourceFile):
            result.files.append(item)
        else:
            result.skipped.append(item)
    result.files.sort(key=lambda f: f.rel_path)
    return result


@dataclass(frozen=True, slots=True)
class _Descend:
    """A folder to walk next, with the .gitignore rules of the folders above it."""

    path: Path
    rel: str
    specs: list[tuple[str, pathspec.PathSpec]]


def _walk(root: Path, config: WalkConfig) -> Iterator[SourceFile | Skipped]:
    """Depth first, each folder in its sorted order. The open folders are a stack of suspended generators, not
    nested calls: a repository can nest folders deeper than Python's recursion limit, where nested calls raise
    RecursionError and fail the whole walk."""
    visited = {root}
    stack = [_folder(root, _Descend(root, "", []), visited, config)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
        elif isinstance(item, _Descend):
            stack.append(_folder(root, item, visited, config))
        else:
            yield item


def _load_ignore(directory: Path, rel_dir: str) -> pathspec.PathSpec | Skipped | None:
    """The folder's .gitignore rules; None without one; Skipped (and no rules) when it cannot be read."""
    ignore_file = directory / ".gitignore"
    rel = f"{rel_dir}/.gitignore" if rel_dir else ".gitignore"
    if ignore_file.is_symlink():
        # as git does: it never follows a symlinked .gitignore, so the rules git applies are the ones applied
        # here, and a link to a file outside the repository (or to a device) is never read
        return Skipped(rel, "its rules were not applied: it is a symlink, which git does not follow for .gitignore")
    try:
        raw = read_regular(ignore_file, max_bytes=MAX_IGNORE_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Skipped(rel, f"its rules were not applied: {exc.strerror or exc}")
    return pathspec.GitIgnoreSpec.from_lines(raw.decode("utf-8", errors="replace").splitlines())


def _ignored(rel: str, is_dir: bool, specs: list[tuple[str, pathspec.PathSpec]]) -> bool:
    # Each .gitignore matches paths relative to its own folder; a trailing slash marks folders for `dir/` rules.
    for base, spec in specs:
        sub = rel[len(base) + 1 :] if base else rel
        if spec.match_file(sub + "/" if is_dir else sub):
            return True
    return False


def _folder(root: Path, folder: _Descend, visited: set[Path],
            config: WalkConfig) -> Iterator[SourceFile | Skipped | _Descend]:
    """One folder's entries: files to index, what was skipped, and its subfolders to walk (not walked here)."""
    spec = _load_ignore(folder.path, folder.rel)
    specs = folder.specs
    if isinstance(spec, Skipped):
        yield spec
    elif spec is not None:
        specs = [*specs, (folder.rel, spec)]
    try:
        # Real entries before symlinks, so a folder reachable both ways is indexed under its real path.
        entries = sorted(os.scandir(folder.path), key=lambda e: (e.is_symlink(), e.name))
    except OSError as exc:
        yield Skipped(folder.rel or ".", f"unreadable folder: {exc.strerror or exc}")
        return
    for entry in entries:
        if isinstance(spec, Skipped) and entry.name == ".gitignore":
            continue  # listed once, with why its rules were not applied
        rel = f"{folder.rel}/{entry.name}" if folder.rel else entry.name
        item = _visit(root, entry, rel, specs, visited, config)
        if item is not None:
            yield item


def _visit(
    root: Path,
    entry: os.DirEntry[str],
    rel: str,
    specs: list[tuple[str, pathspec.PathSpec]],
    visited: set[Path],
    config: WalkConfig,
) -> SourceFile | Skipped | _Descend | None:
    if utf8_name(entry.name) != entry.name:  # an id must be UTF-8 text, and `rel` must lead back to the file
        return Skipped(utf8_name(rel), "its name is not UTF-8; rename it to index it")
    is_link = entry.is_symlink()
    if is_link and not config.follow_symlinks:
        return Skipped(rel, "symlink (not followed)")
    real = Path(entry.path).resolve() if is_link else Path(entry.path)
    if is_link and not real.is_relative_to(root):
        return Skipped(rel, "symlink points outside the repository")
    if entry.is_dir(follow_symlinks=True):
        if entry.name in config.skip_dirs or _ignored(rel, True, specs):
            return None
        real = real.resolve()
        if real in visited:
            return Skipped(rel, "symlink loop (folder already visited)")
        visited.add(real)
        return _Descend(Path(entry.path), rel, specs)
    if _ignored(rel, False, specs):
        return None
    if len(rel) > MAX_DOCUMENT_ID_CHARS:  # the path is the file's document id
        return Skipped(rel, f"its path is longer than {MAX_DOCUMENT_ID_CHARS} characters (a document id's limit); "
                            "move it nearer the repository's root to index it")
    return _check_file(Path(entry.path), rel, config)


def _check_file(path: Path, rel: str, config: WalkConfig) -> SourceFile | Skipped:
    language = language_for_path(path)
    if language is None:
        return Skipped(rel, "no parser for this file type")
    try:
        with open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > config.max_file_bytes:
                return Skipped(rel, f"larger than {config.max_file_bytes} bytes ({size})")
            head = handle.read(_BINARY_SNIFF_BYTES)
    except OSError as exc:
        return Skipped(rel, f"unreadable: {exc.strerror or exc}")
    if b"\0" in head:
        return Skipped(rel, "binary file")
    return SourceFile(path=path, rel_path=rel, language=language, size_bytes=size)


def read_source(source: SourceFile, *, max_bytes: int) -> bytes:
    """A walked file's bytes, read as the walk checked it (a regular file of at most `max_bytes`: it may have
    been replaced or grown since). OSError when it no longer is one, for the caller to report."""
    return read_regular(source.path, max_bytes=max_bytes)
