"""The versioned JSON manifest that names a collection index's files and what they cover.

The manifest is the commit point: files are written under a new generation name first, then the manifest is
replaced atomically, then older generations are deleted. A crash at any moment leaves either the old or the
new manifest, each pointing at complete files; a size or CRC mismatch marks a file damaged after the fact.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragsvc.errors import IndexCorrupt
from ragsvc.index.atomic import atomic_write_bytes, file_crc32

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True, slots=True)
class FileEntry:
    name: str
    role: str
    """`shard`, `rotation`, `rescore` or `staging`."""
    num_bytes: int
    crc32: int
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Manifest:
    spec: dict[str, Any]
    dim: int
    watermark: int
    """Highest chunk id the files cover; chunks above it are replayed from the store on open."""
    count: int
    trained_on: int
    """Vectors the rotation / quantiser / IVF were trained on; 0 while the index is still exact (staging)."""
    generation: int
    files: list[FileEntry]
    format_version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    def write(self, directory: Path) -> None:
        atomic_write_bytes(directory / MANIFEST_NAME, self.to_json())

    @classmethod
    def read(cls, directory: Path) -> Manifest | None:
        """The manifest in `directory`, None when there is none; IndexCorrupt when it cannot be trusted."""
        path = directory / MANIFEST_NAME
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_bytes())
            version = data.get("format_version")
            if version != FORMAT_VERSION:
                raise IndexCorrupt(f"index manifest {path} has format {version}, this build reads {FORMAT_VERSION}")
            data["files"] = [FileEntry(**f) for f in data["files"]]
            return cls(**data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise IndexCorrupt(f"index manifest {path} is unreadable ({exc})") from exc

    def verify(self, directory: Path) -> None:
        """Raise IndexCorrupt unless every file exists with the recorded size and CRC."""
        for entry in self.files:
            path = directory / entry.name
            if not path.is_file():
                raise IndexCorrupt(f"index file {path} is missing")
            if path.stat().st_size != entry.num_bytes or file_crc32(path) != entry.crc32:
                raise IndexCorrupt(f"index file {path} is damaged (size or checksum differs from the manifest)")


@dataclass(frozen=True, slots=True)
class ShardMeta:
    """What a shard's native file cannot hold, kept in its manifest entry's `meta` (beside the shard `index`).

    Fields a backend does not use stay at their defaults and are left out of the JSON, so each backend's
    entries read as before: hnswlib records `num_deleted`, faiss HNSW records `tombstones` when it has any.
    """

    num_deleted: int | None = None
    """hnswlib: labels marked deleted (its file keeps them, but not their count)."""
    tombstones: tuple[int, ...] = ()
    """faiss HNSW: deleted chunk ids that a selector hides (faiss cannot remove graph nodes), ascending."""
    twins: tuple[int, ...] = ()
    """hnswlib: [twin, representative] pairs, flattened: ids whose vector equals a graph node's (`twins.py`)."""
    hidden: tuple[int, ...] = ()
    """hnswlib: deleted representatives whose graph nodes stay for their twins."""
    twins_checked: bool = False
    """hnswlib: the graph was saved keeping copies out (absent: an older file, checked once at load)."""

    def to_dict(self) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        if self.num_deleted is not None:
            meta["num_deleted"] = self.num_deleted
        if self.tombstones:
            meta["tombstones"] = list(self.tombstones)
        if self.twins:
            meta["twins"] = list(self.twins)
        if self.hidden:
            meta["hidden"] = list(self.hidden)
        if self.twins_checked:
            meta["twins_checked"] = True
        return meta

    @classmethod
    def from_dict(cls, meta: dict[str, Any]) -> ShardMeta:
        """Read the shard fields of a manifest entry's meta; other keys (the shard `index`) are ignored."""
        num_deleted = meta.get("num_deleted")
        twins = tuple(int(t) for t in meta.get("twins", ()))
        if len(twins) % 2:
            raise ValueError("a shard's twins are [twin, representative] pairs; the list has an odd length")
        return cls(num_deleted=None if num_deleted is None else int(num_deleted),
                   tombstones=tuple(int(t) for t in meta.get("tombstones", ())), twins=twins,
                   hidden=tuple(int(h) for h in meta.get("hidden", ())),
                   twins_checked=bool(meta.get("twins_checked", False)))


def file_entry(path: Path, role: str, **meta: Any) -> FileEntry:
    return FileEntry(path.name, role, path.stat().st_size, file_crc32(path), dict(meta))
