"""The per-collection code manifest: for each indexed file its hash and tags, as versioned JSON.

It lets a re-index skip unchanged files without parsing them (hash match) and lets the repo map be built
without re-parsing the repository (tags kept here). Written to a temp file, fsynced, renamed, so a crash leaves
the old manifest or the new one, never half of one. A manifest that fails to load is treated as empty: the next
index run re-parses everything and rebuilds it (the store still skips unchanged documents by content hash).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragsvc.code.tags import Definition, FileTags, Reference

logger = logging.getLogger(__name__)

# Bump when the tag or chunk format changes: older manifests are then ignored and files re-parsed.
MANIFEST_VERSION = 1


@dataclass(frozen=True, slots=True)
class FileEntry:
    sha256: str
    content_hash: str | None
    """The store's content hash of the document written for this file; None when the file had no code."""
    tags: FileTags
    problems: tuple[str, ...] = ()


@dataclass(slots=True)
class Manifest:
    root: str
    files: dict[str, FileEntry] = field(default_factory=dict)

    def all_tags(self) -> list[FileTags]:
        return [self.files[path].tags for path in sorted(self.files)]


def manifest_path(data_dir: Path, collection: str) -> Path:
    return Path(data_dir) / "code" / f"{collection}.manifest.json"


def load_manifest(path: Path) -> Manifest | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != MANIFEST_VERSION:
            logger.info("code manifest %s has version %s; re-parsing", path, data.get("version"))
            return None
        return Manifest(root=data["root"], files={p: _entry_from_json(p, e) for p, e in data["files"].items()})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("code manifest %s is unreadable (%s); it will be rebuilt", path, exc)
        return None


def save_manifest(path: Path, manifest: Manifest) -> None:
    payload = {
        "version": MANIFEST_VERSION,
        "root": manifest.root,
        "files": {p: _entry_to_json(e) for p, e in sorted(manifest.files.items())},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(payload, handle, separators=(",", ":"))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _entry_to_json(entry: FileEntry) -> dict[str, Any]:
    return {
        "sha256": entry.sha256,
        "content_hash": entry.content_hash,
        "language": entry.tags.language,
        "problems": list(entry.problems),
        # Positional rows keep the file small: definitions are the bulk of it.
        "definitions": [[d.name, d.symbol, d.kind, d.start_line, d.end_line, d.start_byte, d.end_byte, d.signature,
                         d.parent] for d in entry.tags.definitions],
        "references": [[r.name, r.kind, r.line] for r in entry.tags.references],
    }


def _entry_from_json(rel_path: str, data: dict[str, Any]) -> FileEntry:
    definitions = tuple(Definition(rel_path, *row) for row in data["definitions"])
    references = tuple(Reference(rel_path, *row) for row in data["references"])
    return FileEntry(
        sha256=data["sha256"],
        content_hash=data["content_hash"],
        tags=FileTags(rel_path, data["language"], definitions, references),
        problems=tuple(data.get("problems", ())),
    )
