"""Saving and loading a CollectionState: native shard files, .npz arrays, and the manifest that commits them.

File names carry the generation (`shard-0.g7.hnsw`), so a save never overwrites a file the current manifest
points at. Loading returns None (and logs why) whenever anything is missing, damaged, of another format
version or built for another spec or width; the caller then rebuilds from the store.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ragsvc.embed.rotation import PcaRotation
from ragsvc.errors import IndexCorrupt
from ragsvc.index.atomic import atomic_write
from ragsvc.index.collection_state import CollectionState
from ragsvc.index.exact_shard import ExactShard
from ragsvc.index.factory import load_shard, shard_extension, shard_meta, shard_metric
from ragsvc.index.manifest import MANIFEST_NAME, FileEntry, Manifest, ShardMeta, file_entry
from ragsvc.index.rescore import RescoreStore
from ragsvc.index.shard import Shard
from ragsvc.index.sharded_index import ShardedIndex
from ragsvc.index.spec import IndexSpec

logger = logging.getLogger(__name__)


def save_state(directory: Path, state: CollectionState, spec: IndexSpec, dim: int) -> None:
    gen = state.generation
    entries: list[FileEntry] = []
    if state.staging is not None:
        path = directory / f"staging.g{gen}.npz"
        state.staging.save(path)
        entries.append(file_entry(path, "staging"))
    if state.ann is not None:
        for i, shard in enumerate(state.ann.shards):
            path = directory / f"shard-{i}.g{gen}.{shard_extension(spec)}"
            shard.save(path)
            entries.append(file_entry(path, "shard", index=i, **shard_meta(shard).to_dict()))
    for role, part in (("rotation", state.rotation), ("rescore", state.rescorer)):
        if part is not None:
            path = directory / f"{role}.g{gen}.npz"
            atomic_write(path, part.save)
            entries.append(file_entry(path, role))
    manifest = Manifest(spec=spec.to_dict(), dim=dim, watermark=state.watermark, count=state.count,
                        trained_on=state.trained_on, generation=gen, files=entries)
    manifest.write(directory)


def remove_stale(directory: Path, generation: int) -> None:
    """Delete files of older generations and leftover temp files (the manifest no longer names them)."""
    for path in directory.iterdir():
        if path.name == MANIFEST_NAME or not path.is_file():
            continue
        if f".g{generation}." not in path.name or path.name.startswith("."):
            path.unlink(missing_ok=True)


def load_state(directory: Path, spec: IndexSpec, dim: int) -> CollectionState | None:
    try:
        manifest = Manifest.read(directory)
        if manifest is None:
            return None
        if _file_settings(manifest.spec) != _file_settings(spec.to_dict()) or manifest.dim != dim:
            raise IndexCorrupt(f"index in {directory} was built for another spec or width; rebuilding")
        manifest.verify(directory)
        return _load_parts(directory, manifest, spec, dim)
    except IndexCorrupt as exc:
        logger.warning("index in %s cannot be used (%s); rebuilding from the store", directory, exc.message)
    except Exception as exc:  # a native loader failing in a way we did not foresee must not block opening
        logger.warning("index in %s failed to load (%r); rebuilding from the store", directory, exc)
    return None


def _load_parts(directory: Path, manifest: Manifest, spec: IndexSpec, dim: int) -> CollectionState:
    state = CollectionState(spec, dim, watermark=manifest.watermark, trained_on=manifest.trained_on,
                            generation=manifest.generation)
    metric = shard_metric(spec)
    shards: dict[int, Shard] = {}
    for entry in manifest.files:
        path = directory / entry.name
        if entry.role == "staging":
            state.staging = ExactShard.load(path, dim=dim, metric=metric)
        elif entry.role == "shard":
            shards[int(entry.meta["index"])] = load_shard(spec, spec.dims or dim, path,
                                                          ShardMeta.from_dict(entry.meta))
        elif entry.role == "rotation":
            state.rotation = PcaRotation.load(path, dim=dim)
        elif entry.role == "rescore":
            held = dim - (spec.dims or 0 if spec.rescore_tail_only else 0)
            state.rescorer = RescoreStore.load(path, dim=held, dtype=spec.rescore_dtype, metric=metric)
        else:
            raise IndexCorrupt(f"index manifest names a file of unknown role {entry.role!r}")
    if shards:
        if sorted(shards) != list(range(spec.num_shards)):
            raise IndexCorrupt(f"index manifest lists shards {sorted(shards)}, expected {spec.num_shards}")
        state.ann = ShardedIndex([shards[i] for i in range(spec.num_shards)])
    if (state.staging is None) == (state.ann is None):
        raise IndexCorrupt("index manifest must name either staging vectors or shards")
    if spec.dims is not None and state.ann is not None and state.rescorer is None:
        raise IndexCorrupt("index manifest lacks the rescoring vectors a Matryoshka index needs")
    return state


def _file_settings(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec minus where its shards run: placement changes no file, and manifests written before it
    existed have none, so it must not make a saved index look built for another spec."""
    return {key: value for key, value in spec.items() if key != "placement"}
