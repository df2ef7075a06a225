"""Reading documents from disk for ingest: .txt, .md and .jsonl files, folders (recursive) and globs.

A file or line that cannot become a document is named with the reason (`Unreadable`), so a bulk load can
skip it and report it, or stop at it, as its user asked. A file with no text at all (empty, or whitespace
only) is `NoText`: there is nothing wrong to fix and nothing to store, so a load always skips it, but says so
(a file read and silently dropped looks like one that was ingested).
"""

from __future__ import annotations

import glob
import json
import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ragsvc.errors import InvalidInput
from ragsvc.regular_files import open_regular
from ragsvc.types import MAX_DOCUMENT_ID_CHARS, DocumentInput

SUFFIXES = (".txt", ".md", ".markdown", ".jsonl")


def path_name(path: Path) -> str:
    """`path` as text for ids, sources, metadata and messages (`utf8_name`)."""
    return utf8_name(path.as_posix())


def utf8_name(name: str) -> str:
    """A file name as UTF-8 text. A name that is not UTF-8 (a Latin-1 file name on Linux, say) reaches Python
    with its bad bytes as lone surrogates, which no UTF-8 text can hold: they are written as `\\xNN` escapes
    instead, so such a file gets a readable id that no other name shares."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return name


@dataclass(frozen=True, slots=True)
class Expansion:
    """The files a load will read, and what the folders it walked held besides, so nothing is left out
    silently: a folder of PDFs read as "0 documents" looks like a bug."""

    files: list[Path]
    other_types: dict[str, int]
    """Files of other types found in folders, by suffix ('' for none), not read."""
    hidden: int
    """Hidden entries (names starting with '.') found in folders and not entered: .git, .venv and the like
    hold text files that are not the user's documents. Name one on the command line to read it."""
    unreadable_folders: tuple[str, ...] = ()
    """Folders that could not be listed (permissions, say), with the reason."""

    def passed_over(self) -> str | None:
        """What the folders held that was not read, in one line, or None when that was nothing."""
        parts = []
        if self.other_types:
            kinds = sorted(self.other_types.items(), key=lambda kv: (-kv[1], kv[0]))
            listed = ", ".join(f"{suffix or '(no suffix)'} x{n}" for suffix, n in kinds[:6])
            more = f", {len(kinds) - 6} more types" if len(kinds) > 6 else ""
            parts.append(f"{sum(self.other_types.values())} file(s) of other types ({listed}{more})")
        if self.hidden:
            parts.append(f"{self.hidden} hidden file(s) or folder(s) (names starting with '.'; name one to read it)")
        if self.unreadable_folders:
            more = f" and {len(self.unreadable_folders) - 1} more" if len(self.unreadable_folders) > 1 else ""
            parts.append(f"{len(self.unreadable_folders)} folder(s) that could not be listed "
                         f"({self.unreadable_folders[0]}{more})")
        return "; ".join(parts) if parts else None


def expand_paths(patterns: list[str]) -> Expansion:
    """Files named by paths, folders (recursively: known suffixes only, hidden entries and symlinked folders
    not entered) and glob patterns, sorted, unique. A file named outright must be of a known type."""
    files: set[Path] = set()
    other: dict[str, int] = {}
    hidden = 0
    unlisted: list[str] = []

    def unlistable(exc: OSError) -> None:  # os.walk's onerror: without it a folder it cannot list is skipped
        unlisted.append(f"{exc.filename}: {exc.strerror or exc}")

    for pattern in patterns:
        matches = _glob(pattern) if glob.has_magic(pattern) else [Path(pattern)]
        if not matches or not all(m.exists() for m in matches):
            raise InvalidInput(f"{pattern}: no such file or folder")
        for match in matches:
            if match.is_dir():
                for folder, dirnames, filenames in os.walk(match, onerror=unlistable):
                    hidden += sum(name.startswith(".") for name in dirnames + filenames)
                    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                    for name in filenames:
                        path = Path(folder, name)
                        if name.startswith(".") or not path.is_file():
                            continue
                        if path.suffix.lower() in SUFFIXES:
                            files.add(path)
                        else:
                            other[path.suffix.lower()] = other.get(path.suffix.lower(), 0) + 1
            elif match.suffix.lower() in SUFFIXES:
                files.add(match)
            else:
                raise InvalidInput(f"{match}: unsupported file type {match.suffix!r}; use {', '.join(SUFFIXES)}")
    return Expansion(sorted(files), other, hidden, tuple(unlisted))


def _glob(pattern: str) -> list[Path]:
    """The paths a glob pattern matches, `**` included, entering no symlinked folder: Python's `glob` follows
    them, so two links back up a tree made `docs/**/*.md` list every file under an exponential number of paths
    (a hang). pathlib's `**` does not follow them. Hidden entries match only where the pattern names a hidden
    part itself, as with `glob`."""
    parts = Path(pattern).parts
    first_magic = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    root, rest = Path(*parts[:first_magic]), parts[first_magic:]
    if ".." in rest:
        raise InvalidInput(f"{pattern}: use '..' only before the first wildcard")
    shows_hidden = any(part.startswith(".") for part in rest)
    return sorted(m for m in root.glob(str(Path(*rest)))
                  if shows_hidden or not any(p.startswith(".") for p in m.relative_to(root).parts))


MAX_DOCUMENT_CHARS = 2_000_000
"""Longer documents are refused by name (the API's limit too): split them into several first."""


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A file, or a line of a .jsonl file, that could not become a document: where (`path` or `path:line`)
    and why, in words that say what to do."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class NoText:
    """A file with no text: empty, or only whitespace (a .jsonl file: no line that is not blank)."""

    where: str

    def __str__(self) -> str:
        return f"{self.where}: the file has no text (empty or only whitespace); skipped"


Entry = DocumentInput | Unreadable | NoText


def read_documents(path: Path, *, max_document_chars: int = MAX_DOCUMENT_CHARS) -> Iterator[DocumentInput]:
    """One document per .txt/.md file (id = the path); one per line of a .jsonl file ({id?, text, metadata?}).
    Raises InvalidInput naming the file or line at the first entry that cannot be read; a file with no text
    gives no document."""
    for entry in read_entries(path, max_document_chars=max_document_chars):
        if isinstance(entry, Unreadable):
            raise InvalidInput(str(entry))
        if isinstance(entry, DocumentInput):
            yield entry


def read_entries(path: Path, *, max_document_chars: int = MAX_DOCUMENT_CHARS) -> Iterator[Entry]:
    """Like `read_documents`, but an entry that cannot be read is yielded as `Unreadable` and reading goes on
    (a bad line of a .jsonl file costs that line only; an unreadable file, the file), and a file with no text
    is yielded as `NoText`. A .jsonl file is read line by line, so a large one is never held in memory whole."""
    try:
        if path.suffix.lower() == ".jsonl":
            found = False
            with open_regular(path) as lines:
                for lineno, raw in enumerate(_bounded_lines(lines, _line_limit(max_document_chars)), start=1):
                    if lineno == 1 and raw is not None:
                        raw = raw.removeprefix(_BOM)
                    if raw is None:
                        found = True
                        yield Unreadable(f"{path_name(path)}:{lineno}", f"line of more than "
                                         f"{_line_limit(max_document_chars)} bytes; a document is at most "
                                         f"{max_document_chars} characters: split it into several")
                    elif raw.strip():
                        found = True
                        yield _jsonl_entry(path, lineno, raw, max_document_chars)
            if not found:
                yield NoText(path_name(path))
            return
        with open_regular(path) as handle:  # a pipe or device is named, not read (regular_files.py)
            limit = 4 * max_document_chars  # past 4 bytes a character, too long whatever the encoding
            size = os.fstat(handle.fileno()).st_size
            raw = handle.read(limit + 1) if size <= limit else b""  # so it is never read whole
        if size > limit or len(raw) > limit:
            yield Unreadable(path_name(path), f"file of {max(size, len(raw))} bytes; a document is at most "
                                              f"{max_document_chars} characters: split it into several")
            return
        text = _decode_file(raw, path_name(path))
    except OSError as exc:
        yield Unreadable(path_name(path), f"cannot read the file ({exc.strerror or exc}); check it exists and "
                                          "is readable")
        return
    if isinstance(text, Unreadable):
        yield text
    elif len(text) > max_document_chars:
        yield _too_long(path_name(path), len(text), max_document_chars)
    elif text.strip():
        yield DocumentInput(text=text, id=path_name(path), source=path_name(path),
                            metadata={"path": path_name(path), "type": path.suffix.lower().lstrip(".")})
    else:
        yield NoText(path_name(path))


@dataclass(frozen=True, slots=True)
class Scan:
    """What reading `files` will give: how many entries, and those that cannot be read (the first `limit`)."""

    num_entries: int
    unreadable: tuple[Unreadable, ...]
    num_unreadable: int
    repeated_ids: int = 0
    """Document ids given to more than one entry: each is stored as its last version, so a load of N entries
    holds fewer than N documents (a .jsonl line without an id is named by its file and line number)."""
    repeated_entries: int = 0
    """The entries that carry those ids, all versions counted."""


def scan_entries(files: list[Path], *, max_document_chars: int = MAX_DOCUMENT_CHARS, limit: int = 1000) -> Scan:
    """Read every entry once without keeping it: the count for a progress bar's total (files with no text
    included, as the bar advances for them too), and every entry that would be refused, so a load asked to stop
    at bad input can refuse it before writing anything."""
    total = 0
    bad: list[Unreadable] = []
    num_bad = 0
    digests = array("q")  # 8 bytes an id, not a set of the ids: a corpus of millions of documents stays small
    for path in files:
        for entry in read_entries(path, max_document_chars=max_document_chars):
            total += 1
            if isinstance(entry, Unreadable):
                num_bad += 1
                if len(bad) < limit:
                    bad.append(entry)
            elif isinstance(entry, DocumentInput) and entry.id is not None:
                digests.append(hash(entry.id))  # one process's hashes, compared within this scan only
    _, counts = np.unique(np.frombuffer(digests, dtype=np.int64), return_counts=True)
    repeated = counts[counts > 1]
    return Scan(total, tuple(bad), num_bad, repeated_ids=len(repeated), repeated_entries=int(repeated.sum()))


def _line_limit(max_document_chars: int) -> int:
    """Bytes a .jsonl line may hold: the longest document at 4 bytes a character (UTF-8), plus its metadata."""
    return 4 * max_document_chars + (1 << 20)


def _bounded_lines(handle: BinaryIO, limit: int) -> Iterator[bytes | None]:
    """The lines of `handle`, each read at most `limit` bytes at a time: a longer line is skipped to its end in
    pieces and given as None, so one line with no newline in a huge file never fills the memory."""
    while raw := handle.readline(limit + 1):
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield raw
            continue
        while raw and not raw.endswith(b"\n"):
            raw = handle.readline(1 << 20)
        yield None


_BOM = b"\xef\xbb\xbf"
"""A UTF-8 byte-order mark, which Windows editors put at the start of a file: not part of the text."""


_UNICODE_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"),
                 (b"\xfe\xff", "utf-16"))
"""Byte-order marks that say a whole file is UTF-32 or UTF-16 (Windows PowerShell's `>` writes UTF-16), longest
first: a UTF-32 little-endian mark begins with the UTF-16 one. The codec reads the byte order from the mark."""


def _decode(raw: bytes, where: str) -> str | Unreadable:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Unreadable(where, f"not UTF-8 text ({exc.reason} at byte {exc.start}); convert it to UTF-8 first")


def _decode_file(raw: bytes, where: str) -> str | Unreadable:
    """A whole text file: UTF-8 (a leading byte-order mark dropped), or UTF-16 / UTF-32 by their mark."""
    for mark, codec in _UNICODE_BOMS:
        if raw.startswith(mark):
            try:
                return raw.decode(codec)
            except UnicodeDecodeError as exc:
                return Unreadable(where, f"starts with a {codec.upper()} byte-order mark but is not {codec.upper()} "
                                         f"text ({exc.reason} at byte {exc.start}); convert it to UTF-8 first")
    text = _decode(raw.removeprefix(_BOM), where)
    if isinstance(text, Unreadable):  # a .jsonl line is never UTF-16: only whole files get this hint
        return Unreadable(where, f"{text.reason} (UTF-16 and UTF-32 files are read when they start with a "
                                 "byte-order mark)")
    return text


def _too_long(where: str, num_chars: int, limit: int) -> Unreadable:
    return Unreadable(where, f"document of {num_chars} characters; the limit is {limit}: split it into several")


def _jsonl_entry(path: Path, lineno: int, raw: bytes, max_document_chars: int) -> DocumentInput | Unreadable:
    where = f"{path_name(path)}:{lineno}"
    line = _decode(raw, where)
    if isinstance(line, Unreadable):
        return line
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return Unreadable(where, f"invalid JSON ({exc.msg}); each line must be one JSON object")
    except RecursionError:
        return Unreadable(where, "JSON nested too deeply to read; flatten its metadata")
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        return Unreadable(where, "each line needs a \"text\" string, e.g. {\"id\": \"a\", \"text\": \"...\"}")
    if not row["text"].strip():
        return Unreadable(where, "\"text\" is empty; every document needs some text")
    if len(row["text"]) > max_document_chars:
        return _too_long(where, len(row["text"]), max_document_chars)
    metadata = row.get("metadata") or {}
    if not isinstance(metadata, dict):
        return Unreadable(where, "\"metadata\" must be an object")
    doc_id = row.get("id", row.get("_id"))
    if doc_id is not None and not 1 <= len(str(doc_id)) <= MAX_DOCUMENT_ID_CHARS:
        return Unreadable(where, f"\"id\" has {len(str(doc_id))} characters; use 1 to {MAX_DOCUMENT_ID_CHARS}")
    return DocumentInput(text=row["text"], id=str(doc_id) if doc_id is not None else where,
                         metadata={**metadata, "path": path_name(path)}, source=path_name(path))
