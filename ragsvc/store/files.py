"""Reading documents from disk for ingest: .txt, .md and .jsonl files, folders (recursive) and globs."""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from pathlib import Path

from ragsvc.errors import InvalidInput
from ragsvc.types import DocumentInput

SUFFIXES = (".txt", ".md", ".markdown", ".jsonl")


def expand_paths(patterns: list[str]) -> list[Path]:
    """Files named by paths, folders (recursively, known suffixes only) and glob patterns, sorted, unique."""
    files: set[Path] = set()
    for pattern in patterns:
        matches = [Path(p) for p in glob.glob(pattern, recursive=True)] if glob.has_magic(pattern) else [Path(pattern)]
        if not matches or not all(m.exists() for m in matches):
            raise InvalidInput(f"{pattern}: no such file or folder")
        for match in matches:
            if match.is_dir():
                files.update(p for p in match.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
            elif match.suffix.lower() in SUFFIXES:
                files.add(match)
            else:
                raise InvalidInput(f"{match}: unsupported file type {match.suffix!r}; use {', '.join(SUFFIXES)}")
    return sorted(files)


def read_documents(path: Path) -> Iterator[DocumentInput]:
    """One document per .txt/.md file (id = the path); one per line of a .jsonl file ({id?, text, metadata?})."""
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); convert it first") from exc
    if path.suffix.lower() != ".jsonl":
        if raw.strip():
            yield DocumentInput(text=raw, id=path.as_posix(), source=path.as_posix(),
                                metadata={"path": path.as_posix(), "type": path.suffix.lower().lstrip(".")})
        return
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        yield _jsonl_document(path, lineno, line)


def _jsonl_document(path: Path, lineno: int, line: str) -> DocumentInput:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}:{lineno}: invalid JSON ({exc.msg}); each line must be one JSON object") from exc
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise InvalidInput(
            f"{path}:{lineno}: each line needs a \"text\" string, e.g. {{\"id\": \"a\", \"text\": \"...\"}}"
        )
    metadata = row.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidInput(f"{path}:{lineno}: \"metadata\" must be an object")
    doc_id = row.get("id", row.get("_id"))
    return DocumentInput(text=row["text"], id=str(doc_id) if doc_id is not None else f"{path.as_posix()}:{lineno}",
                         metadata={**metadata, "path": path.as_posix()}, source=path.as_posix())
