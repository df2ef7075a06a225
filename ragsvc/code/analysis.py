"""One file, start to finish: bytes -> parse -> tags -> definition chunks -> a document for the store."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from tree_sitter import QueryError

from ragsvc.code.chunker import ChunkConfig, CodeChunk, chunk_file
from ragsvc.code.parser import decode_source, parse_text
from ragsvc.code.tags import Definition, FileTags, TagsTooCostly, extract_tags
from ragsvc.code.walker import DEFAULT_MAX_FILE_BYTES, SourceFile, WalkConfig, WalkResult, read_source, walk_repository
from ragsvc.types import ChunkInput, DocumentInput


@dataclass(frozen=True, slots=True)
class FileAnalysis:
    """Everything the indexer and the repo map need from one file."""

    rel_path: str
    language: str
    sha256: str
    text: str
    tags: FileTags
    chunks: tuple[CodeChunk, ...]
    char_spans: tuple[tuple[int, int], ...]
    """(start_char, end_char) of each chunk in `text`."""
    problems: tuple[str, ...]


def file_sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def analyse_bytes(
    raw: bytes, *, rel_path: str, language: str, chunk_config: ChunkConfig | None = None
) -> FileAnalysis:
    """Parse and chunk a file's bytes. Never raises on bad content: invalid UTF-8 and syntax errors are
    recovered from and listed in `problems`."""
    text, problems = decode_source(raw)
    parsed = parse_text(text, language=language, rel_path=rel_path, problems=problems)
    try:
        tags = extract_tags(parsed)
    except QueryError as exc:  # a grammar version whose node names differ from our queries: chunk what we can
        tags = FileTags(rel_path, language, (), ())
        problems = [*parsed.problems, f"tag query for {language} does not fit the installed grammar: {exc}"]
        parsed = replace(parsed, problems=tuple(problems))
    except TagsTooCostly as exc:  # a pathological file: its code is still searchable, only without symbols
        tags = FileTags(rel_path, language, (), ())
        problems = [*parsed.problems, f"not tagged: {exc}; chunked as plain code"]
        parsed = replace(parsed, problems=tuple(problems))
    chunks = tuple(c for c in chunk_file(parsed, tags, config=chunk_config or ChunkConfig()) if c.text.strip())
    spans = tuple(_char_span(parsed.data, text, c.start_byte, c.end_byte) for c in chunks)
    return FileAnalysis(rel_path, language, file_sha256(raw), text, tags, chunks, spans, parsed.problems)


def analyse_file(source: SourceFile, *, chunk_config: ChunkConfig | None = None,
                 max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> FileAnalysis:
    """Read and analyse one walked file; OSError (unreadable, vanished, no longer a file of at most `max_bytes`)
    propagates for the caller to report."""
    return analyse_bytes(read_source(source, max_bytes=max_bytes), rel_path=source.rel_path,
                         language=source.language, chunk_config=chunk_config)


def _char_span(data: bytes, text: str, start_byte: int, end_byte: int) -> tuple[int, int]:
    if len(data) == len(text):  # pure ASCII: bytes and characters coincide
        return start_byte, end_byte
    start = len(data[:start_byte].decode("utf-8", errors="ignore"))
    return start, start + len(data[start_byte:end_byte].decode("utf-8", errors="ignore"))


def to_document(analysis: FileAnalysis) -> DocumentInput | None:
    """The store document for a file (id = its path in the repo), or None when it holds no code."""
    if not analysis.chunks or not analysis.text.strip():
        return None
    chunks = [
        ChunkInput(
            text=chunk.text,
            start_char=start,
            end_char=end,
            metadata={
                "symbol": chunk.symbol,
                "kind": chunk.kind,
                "start_line": chunk.start_line,
                "end_line": chunk.end_line,
                **({"part": chunk.part, "num_parts": chunk.num_parts} if chunk.num_parts > 1 else {}),
            },
        )
        for chunk, (start, end) in zip(analysis.chunks, analysis.char_spans, strict=True)
    ]
    return DocumentInput(
        text=analysis.text,
        id=analysis.rel_path,
        metadata={"path": analysis.rel_path, "language": analysis.language, "sha256": analysis.sha256},
        source=analysis.rel_path,
        chunks=chunks,
    )


def analyse_repository(
    root: str | Path, *, walk_config: WalkConfig | None = None, chunk_config: ChunkConfig | None = None
) -> tuple[WalkResult, list[FileAnalysis], dict[str, list[str]]]:
    """Walk and analyse a whole repository in memory (no store): for maps of repositories never indexed.
    Returns the walk, the analyses, and the problems per file (unreadable files are left out and listed)."""
    walk_config = walk_config or WalkConfig()
    walk = walk_repository(root, config=walk_config)
    analyses: list[FileAnalysis] = []
    problems: dict[str, list[str]] = {}
    for source in walk.files:
        try:
            analysis = analyse_file(source, chunk_config=chunk_config, max_bytes=walk_config.max_file_bytes)
        except OSError as exc:
            problems[source.rel_path] = [f"unreadable: {exc.strerror or exc}"]
            continue
        analyses.append(analysis)
        if analysis.problems:
            problems[source.rel_path] = list(analysis.problems)
    return walk, analyses, problems


def definition_texts(analyses: list[FileAnalysis]) -> tuple[list[Definition], list[str]]:
    """Every definition with the text of its (first) chunk, for embedding definitions in memory."""
    definitions: list[Definition] = []
    texts: list[str] = []
    for analysis in analyses:
        first_chunk: dict[str, str] = {}
        for chunk in analysis.chunks:
            first_chunk.setdefault(chunk.symbol, chunk.text)
        for definition in analysis.tags.definitions:
            definitions.append(definition)
            texts.append(f"{definition.rel_path}\n" + first_chunk.get(definition.symbol, definition.signature))
    return definitions, texts
