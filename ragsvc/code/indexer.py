"""Index a repository into a VectorStore collection, incrementally.

One document per source file (id = path in the repo), one chunk per definition with path, language, symbol,
kind and line-span metadata, so code is searchable through the normal search API and filters. A re-index
hashes every file and re-parses and re-embeds only those whose hash differs from the manifest (or whose stored
document differs from what the manifest recorded); files gone from the repository leave the collection.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ragsvc.code.analysis import FileAnalysis, analyse_bytes, file_sha256, to_document
from ragsvc.code.chunker import ChunkConfig
from ragsvc.code.graph import GraphConfig, SymbolGraph
from ragsvc.code.manifest import FileEntry, Manifest, load_manifest, manifest_path, save_manifest
from ragsvc.code.walker import SourceFile, WalkConfig, read_source, walk_repository
from ragsvc.errors import CollectionNotFound, InvalidInput
from ragsvc.retrieval.ingest import content_hash
from ragsvc.retrieval.vector_store import VectorStore
from ragsvc.types import DocumentInput

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called with (files done, files total) as indexing advances."""


@dataclass(frozen=True, slots=True)
class IndexProgress:
    """Where an index run is: files hashed so far of those the walk found, and of them those parsed and written
    (changed) or left as they were (unchanged); written files lag seen ones by up to one write batch."""

    files_total: int
    files_seen: int
    files_parsed: int
    files_unchanged: int
    chunks: int


Stages = Callable[[IndexProgress], None]


@dataclass(slots=True)
class IndexReport:
    """What an index run did. `problems` maps a file to what went wrong with it (it was indexed as far as
    possible, or kept as previously indexed when unreadable); `skipped` counts left-out files by reason."""

    collection: str
    root: str
    num_files: int = 0
    num_parsed: int = 0
    num_unchanged: int = 0
    num_removed: int = 0
    num_chunks: int = 0
    """Chunks written in this run (of the parsed files)."""
    seconds: float = 0.0
    problems: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    changed_files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "collection": self.collection, "root": self.root, "num_files": self.num_files,
            "num_parsed": self.num_parsed, "num_unchanged": self.num_unchanged, "num_removed": self.num_removed,
            "num_chunks": self.num_chunks, "seconds": round(self.seconds, 3), "problems": self.problems,
            "skipped": self.skipped, "changed_files": self.changed_files,
        }


def default_collection_name(root: Path) -> str:
    """`repo-<folder name>` squeezed into the store's collection-name alphabet."""
    cleaned = "".join(ch if ch.isalnum() or ch in "_.-" else "-" for ch in root.name)[:50]
    return f"repo-{cleaned or 'root'}"


class RepoIndexer:
    """Walks, parses, chunks and writes a repository; the store does embedding, caching and transactions."""

    def __init__(self, store: VectorStore, *, walk_config: WalkConfig | None = None,
                 chunk_config: ChunkConfig | None = None, batch_files: int = 32) -> None:
        if batch_files < 1:
            raise ValueError(f"batch_files must be at least 1, got {batch_files}")
        self.store = store
        self.walk_config = walk_config or WalkConfig()
        self.chunk_config = chunk_config or ChunkConfig()
        self.batch_files = batch_files

    def index(self, root: str | Path, *, collection: str | None = None, progress: Progress | None = None,
              embed_progress: bool = False, stages: Stages | None = None) -> IndexReport:
        """Index `root`; `progress` hears (files done, total) per file, `stages` the fuller `IndexProgress` after
        each file and each written batch."""
        started = time.perf_counter()
        walk = walk_repository(root, config=self.walk_config)
        name = collection or default_collection_name(walk.root)
        self._ensure_collection(name)
        report = IndexReport(collection=name, root=str(walk.root), num_files=len(walk.files))
        report.skipped = dict(Counter(_reason_kind(s.reason) for s in walk.skipped))
        for item in walk.skipped:
            if item.reason.startswith(("unreadable", "symlink loop")):
                report.problems.setdefault(item.rel_path, []).append(item.reason)
        path = manifest_path(self.store.data_dir, name)
        manifest = load_manifest(path) or Manifest(root=str(walk.root))
        if manifest.root != str(walk.root):
            raise InvalidInput(f"collection {name!r} indexes {manifest.root}, not {walk.root}; "
                               "pass another --collection or delete that collection first")
        stored = self.store.document_hashes(name)
        pending: list[tuple[FileAnalysis, DocumentInput | None]] = []
        for done, source in enumerate(walk.files, start=1):
            analysis = self._analyse_if_changed(source, manifest, stored, report)
            if analysis is not None:
                pending.append((analysis, to_document(analysis)))
            if len(pending) >= self.batch_files:
                self._write(name, pending, manifest, stored, report, embed_progress)
            if progress is not None:
                progress(done, len(walk.files))
            if stages is not None:
                stages(_progress(report, done))
        self._write(name, pending, manifest, stored, report, embed_progress)
        if stages is not None:
            stages(_progress(report, len(walk.files)))
        # A file that exists but cannot be read keeps its previous version (reported above), never deleted.
        unreadable = {s.rel_path for s in walk.skipped if s.reason.startswith("unreadable")}
        self._remove_gone(name, {f.rel_path for f in walk.files} | unreadable, manifest, stored, report)
        save_manifest(path, manifest)
        report.seconds = time.perf_counter() - started
        logger.info("indexed %s into %s: %d parsed, %d unchanged, %d removed, %d chunks in %.2f s", walk.root,
                    name, report.num_parsed, report.num_unchanged, report.num_removed, report.num_chunks,
                    report.seconds)
        return report

    def load_graph(self, collection: str, *, config: GraphConfig | None = None) -> SymbolGraph:
        """The symbol graph of an indexed repository, from its manifest (no parsing)."""
        manifest = load_manifest(manifest_path(self.store.data_dir, collection))
        if manifest is None:
            raise CollectionNotFound(f"no code index for collection {collection!r}; run `ragsvc repo index` first")
        return SymbolGraph(manifest.all_tags(), config=config or GraphConfig())

    def _ensure_collection(self, name: str) -> None:
        try:
            self.store.get_collection(name)
        except CollectionNotFound:
            self.store.create_collection(name)

    def _analyse_if_changed(self, source: SourceFile, manifest: Manifest, stored: dict[str, str],
                            report: IndexReport) -> FileAnalysis | None:
        try:
            raw = read_source(source, max_bytes=self.walk_config.max_file_bytes)
        except OSError as exc:  # keep what was indexed before; say why this file was not refreshed
            report.problems.setdefault(source.rel_path, []).append(f"unreadable: {exc.strerror or exc}")
            return None
        entry = manifest.files.get(source.rel_path)
        if entry is not None and entry.sha256 == file_sha256(raw) and stored.get(source.rel_path) == entry.content_hash:
            report.num_unchanged += 1
            return None
        analysis = analyse_bytes(raw, rel_path=source.rel_path, language=source.language,
                                 chunk_config=self.chunk_config)
        if analysis.problems:
            report.problems.setdefault(source.rel_path, []).extend(analysis.problems)
        return analysis

    def _write(self, name: str, pending: list[tuple[FileAnalysis, DocumentInput | None]], manifest: Manifest,
               stored: dict[str, str], report: IndexReport, embed_progress: bool) -> None:
        if not pending:
            return
        documents = [doc for _, doc in pending if doc is not None]
        if documents:
            self.store.add_documents(name, documents, progress=embed_progress)  # one transaction per batch
        for analysis, doc in pending:
            if doc is None and analysis.rel_path in stored:  # the file no longer holds any code
                self.store.delete_document(name, analysis.rel_path)
                stored.pop(analysis.rel_path)
            digest = content_hash(doc) if doc is not None else None
            if digest is not None:
                stored[analysis.rel_path] = digest
            manifest.files[analysis.rel_path] = FileEntry(analysis.sha256, digest, analysis.tags, analysis.problems)
            report.num_parsed += 1
            report.num_chunks += len(doc.chunks or []) if doc is not None else 0
            report.changed_files.append(analysis.rel_path)
        pending.clear()

    def _remove_gone(self, name: str, present: set[str], manifest: Manifest, stored: dict[str, str],
                     report: IndexReport) -> None:
        for rel_path in sorted(set(stored) - present):
            self.store.delete_document(name, rel_path)
            report.num_removed += 1
        for rel_path in set(manifest.files) - present:
            del manifest.files[rel_path]


def _reason_kind(reason: str) -> str:
    return reason.split(" (", 1)[0].split(":", 1)[0]


def _progress(report: IndexReport, seen: int) -> IndexProgress:
    return IndexProgress(files_total=report.num_files, files_seen=seen, files_parsed=report.num_parsed,
                         files_unchanged=report.num_unchanged, chunks=report.num_chunks)
