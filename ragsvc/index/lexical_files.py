"""Saving and loading a lexical (BM25) index: one .npz of postings arrays and a JSON manifest that commits it.

What is saved is a `LexicalSnapshot`: the merged main segment only (the index merges its delta and drops
tombstones before saving), so the files hold plain CSC arrays and nothing needs replaying but chunks above
the watermark. The vocabulary is stored in the .npz as one UTF-8 blob plus offsets: numpy's fixed-width
unicode arrays would pad every term to the longest one, and an object array would need pickle.

Commit protocol (as for the ANN shards): the .npz is written under a new generation name, fsynced and
renamed; then the manifest is replaced atomically; then older generations are deleted. The manifest
records the file's size and CRC32, the tokenizer config and BM25 parameters, and the watermark.

`read_snapshot` returns None when no index was ever saved in the folder and raises `IndexCorrupt` when one
was but cannot be trusted (unreadable JSON, another format version, a missing, truncated or altered file,
arrays that do not fit together). The caller then rebuilds from the catalog.

The folder belongs to the lexical index alone (e.g. `<collection dir>/lexical/`): stale generations are
removed by name, and the ANN side's `remove_stale` deletes every file it does not recognise.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragsvc.errors import IndexCorrupt
from ragsvc.index.atomic import atomic_write, atomic_write_bytes, file_crc32

FORMAT_VERSION = 1
MANIFEST_NAME = "lexical.json"
_ARRAYS = ("indptr", "rows", "tfs", "row_ids", "doc_len", "vocab_blob", "vocab_offsets")
_MANIFEST_KEYS = ("generation", "watermark", "count", "num_terms", "tokenizer", "params", "file")
_MANIFEST_FILE_KEYS = ("name", "num_bytes", "crc32")


@dataclass(frozen=True, eq=False, slots=True)
class LexicalSnapshot:
    """A merged, tombstone-free lexical index as plain arrays (what is on disk, minus the manifest)."""

    terms: list[str]
    """Term strings; the position is the term id (the column in the CSC arrays)."""
    indptr: np.ndarray
    """int64 (num_terms + 1,): postings of term t are rows[indptr[t]:indptr[t+1]]."""
    rows: np.ndarray
    """int32 (nnz,): row numbers, ascending within a term."""
    tfs: np.ndarray
    """int32 (nnz,): term frequency of the term in that row's document."""
    row_ids: np.ndarray
    """int64 (num_rows,): chunk id of each row."""
    doc_len: np.ndarray
    """int32 (num_rows,): number of terms in each row's document (after stopword removal)."""
    tokenizer: dict[str, Any]
    params: dict[str, Any]
    watermark: int
    generation: int


def data_name(generation: int) -> str:
    return f"lexical.g{generation}.npz"


def write_snapshot(directory: Path, snap: LexicalSnapshot, *, versions: dict[str, str]) -> None:
    """Write the arrays under the snapshot's generation, commit them with the manifest, drop older files."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / data_name(snap.generation)
    blob, offsets = _encode_terms(snap.terms)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file handle, so numpy does not append ".npz" to the temp name
            np.savez(handle, indptr=snap.indptr, rows=snap.rows, tfs=snap.tfs, row_ids=snap.row_ids,
                     doc_len=snap.doc_len, vocab_blob=blob, vocab_offsets=offsets)

    atomic_write(path, write)
    manifest = {
        "format_version": FORMAT_VERSION, "generation": snap.generation, "watermark": snap.watermark,
        "count": len(snap.row_ids), "num_terms": len(snap.terms), "tokenizer": snap.tokenizer,
        "params": snap.params, "versions": versions,
        "file": {"name": path.name, "num_bytes": path.stat().st_size, "crc32": file_crc32(path)},
    }
    atomic_write_bytes(directory / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True).encode())
    for old in directory.glob("lexical.g*.npz"):
        if old.name != path.name:
            old.unlink(missing_ok=True)


def read_snapshot(directory: Path) -> LexicalSnapshot | None:
    """The saved index in `directory`; None when none was saved; IndexCorrupt when it cannot be trusted."""
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.exists():
        return None
    manifest = _read_manifest(manifest_path)
    entry = manifest["file"]
    path = directory / str(entry["name"])
    if not path.is_file():
        raise IndexCorrupt(f"lexical index file {path} is missing; rebuild the lexical index from the catalog")
    if path.stat().st_size != entry["num_bytes"] or file_crc32(path) != entry["crc32"]:
        raise IndexCorrupt(f"lexical index file {path} is damaged (size or checksum differs from the manifest); "
                           "rebuild the lexical index from the catalog")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in _ARRAYS}
        terms = _decode_terms(arrays["vocab_blob"], arrays["vocab_offsets"])
    except (OSError, ValueError, KeyError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise IndexCorrupt(f"lexical index file {path} is unreadable ({exc}); rebuild it from the catalog") from exc
    snap = LexicalSnapshot(terms=terms, indptr=arrays["indptr"], rows=arrays["rows"], tfs=arrays["tfs"],
                           row_ids=arrays["row_ids"], doc_len=arrays["doc_len"], tokenizer=manifest["tokenizer"],
                           params=manifest["params"], watermark=int(manifest["watermark"]),
                           generation=int(manifest["generation"]))
    check_snapshot(snap, expected_terms=int(manifest["num_terms"]), expected_rows=int(manifest["count"]))
    return snap


def check_snapshot(snap: LexicalSnapshot, *, expected_terms: int, expected_rows: int) -> None:
    """Raise IndexCorrupt unless the arrays have the dtypes, shapes and bounds a search relies on."""
    problems = []
    num_terms, num_rows = len(snap.terms), len(snap.row_ids)
    kinds = {"indptr": (snap.indptr, "i"), "rows": (snap.rows, "i"), "tfs": (snap.tfs, "i"),
             "row_ids": (snap.row_ids, "i"), "doc_len": (snap.doc_len, "i")}
    problems += [f"{name} is not a 1-D integer array" for name, (a, kind) in kinds.items()
                 if a.ndim != 1 or a.dtype.kind != kind]
    if problems:
        raise IndexCorrupt(f"lexical index arrays do not fit together: {'; '.join(problems)}")
    if num_terms != expected_terms or num_rows != expected_rows:
        problems.append(f"{num_terms} terms / {num_rows} rows where the manifest says {expected_terms} / "
                        f"{expected_rows}")
    if len(snap.indptr) != num_terms + 1 or snap.indptr[0] != 0 or snap.indptr[-1] != len(snap.rows):
        problems.append("indptr does not span the postings")
    elif np.any(np.diff(snap.indptr) < 0):
        problems.append("indptr decreases")
    if len(snap.tfs) != len(snap.rows) or len(snap.doc_len) != num_rows:
        problems.append("postings or row arrays differ in length")
    if len(snap.rows) and (snap.rows.min() < 0 or snap.rows.max() >= num_rows or snap.tfs.min() < 1):
        problems.append("a posting points outside the rows or has a term frequency below 1")
    if num_rows and (snap.row_ids.min() < 0 or len(np.unique(snap.row_ids)) != num_rows):
        problems.append("chunk ids are negative or repeated")
    if len(set(snap.terms)) != num_terms:
        problems.append("the vocabulary repeats a term")
    if problems:
        raise IndexCorrupt(f"lexical index arrays do not fit together: {'; '.join(problems)}; rebuild from the catalog")


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_bytes())
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexCorrupt(f"lexical manifest {path} has format {version}, this build reads {FORMAT_VERSION}; "
                               "rebuild the lexical index from the catalog")
        missing = [key for key in _MANIFEST_KEYS if key not in manifest]
        missing += [f"file.{key}" for key in _MANIFEST_FILE_KEYS if key not in manifest.get("file", {})]
        if missing:  # a manifest we did not write
            raise IndexCorrupt(f"lexical manifest {path} lacks {', '.join(missing)}; rebuild from the catalog")
        return dict(manifest)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise IndexCorrupt(f"lexical manifest {path} is unreadable ({exc!r}); rebuild from the catalog") from exc


def _encode_terms(terms: list[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [term.encode("utf-8") for term in terms]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)  # (num_terms + 1,)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def _decode_terms(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    if (blob.dtype != np.uint8 or offsets.ndim != 1 or not len(offsets) or offsets[0] != 0
            or offsets[-1] != len(blob) or np.any(np.diff(offsets) < 0)):
        raise ValueError("vocabulary offsets do not match the vocabulary bytes")
    data = blob.tobytes()
    bounds = offsets.tolist()
    return [data[start:end].decode("utf-8") for start, end in zip(bounds[:-1], bounds[1:], strict=True)]
