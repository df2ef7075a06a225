"""`ragsvc collections create|list|delete|compact`: making a collection with its index settings and placement,
what the store holds, removing a collection with its index files, and giving the disk back what removals
left in the catalog file."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from ragsvc.cli.common import DataDir, fail, open_store, settings
from ragsvc.errors import RagsvcError

app = typer.Typer(help="Create, list, delete or compact collections.", no_args_is_help=True)


@app.command("create")
def create_command(
    name: Annotated[str, typer.Argument(help="the new collection's name (letters, digits, _ . -)")],
    index: Annotated[str, typer.Option(help="index settings as JSON, as POST /v1/collections takes them")] = "{}",
    shards: Annotated[int | None, typer.Option(help="num_shards (over --index)")] = None,
    placement: Annotated[str | None, typer.Option(help="in_process or ray (ray: RAGSVC_CLUSTER__ADDRESS set)")] = None,
    replicas: Annotated[int | None, typer.Option(help="actors per shard, placement ray")] = None,
    spread: Annotated[str | None, typer.Option(help="strict (replicas on distinct nodes) or soft")] = None,
    chunk_tokens: Annotated[int, typer.Option(min=16, max=8192, help="tokens per chunk when documents are split")
                            ] = 200,
    chunk_overlap: Annotated[int, typer.Option(min=0, max=8192,
                                               help="tokens shared by consecutive chunks (below --chunk-tokens)")
                             ] = 32,
    data_dir: DataDir = None,
) -> None:
    """Create an empty collection. A ray placement joins the cluster RAGSVC_CLUSTER__ADDRESS names to check
    that it can host the replicas; without that setting it is refused."""
    from ragsvc.cluster.runtime import connect_from_settings
    from ragsvc.index.spec import IndexSpec

    try:
        spec = IndexSpec.from_dict(_index_settings(index, shards, placement, replicas, spread))
    except (ValueError, RagsvcError) as exc:
        raise fail(exc) from exc
    store = open_store(data_dir)
    try:
        if spec.placement.mode == "ray":
            store.cluster = connect_from_settings(settings(data_dir).cluster)
        info = store.create_collection(name, index=spec, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap)
    except RagsvcError as exc:
        raise fail(exc) from exc
    finally:
        store.close()
    typer.echo(f"created {info.name}: {_describe(info.index)}")


def _index_settings(text: str, shards: int | None, placement: str | None, replicas: int | None,
                    spread: str | None) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--index is not JSON ({exc.msg}); send e.g. '{{\"backend\": \"hnsw\"}}'") from exc
    except RecursionError as exc:
        raise ValueError("--index is nested too deeply to read") from exc
    if not isinstance(data, dict):
        raise ValueError("--index must be a JSON object of index settings")
    if shards is not None:
        data["num_shards"] = shards
    given = {k: v for k, v in (("mode", placement), ("replicas", replicas), ("spread", spread)) if v is not None}
    if given:
        data["placement"] = {**(data.get("placement") or {}), **given}
    return data


def _describe(index: Any) -> str:
    place = index.placement
    where = "in process" if place.mode == "in_process" else f"ray x{place.replicas} ({place.spread})"
    return f"index={index.backend} shards={index.num_shards} dims={index.dims or 'all'} placement={where}"


@app.command("list")
def list_command(data_dir: DataDir = None) -> None:
    """List collections with their sizes and index settings."""
    store = open_store(data_dir)
    try:
        collections = store.list_collections()
        for info in collections:
            typer.echo(f"{info.name}: {info.num_documents} docs, {info.num_chunks} chunks, {info.embedder_id}, "
                       f"{_describe(info.index)}")
        if not collections:
            typer.echo(f"no collections in {settings(data_dir).store.data_dir}; create one with "
                       "`ragsvc ingest FILES -c NAME` or `ragsvc collections create NAME`")
    finally:
        store.close()


@app.command("delete")
def delete_command(name: Annotated[str, typer.Argument(help="the collection to delete")],
                   data_dir: DataDir = None) -> None:
    """Delete a collection, its documents and its index files."""
    from ragsvc.errors import CollectionNotFound

    store = open_store(data_dir)
    try:
        store.delete_collection(name)
    except CollectionNotFound as exc:  # the usual message's "fill it with" would be odd advice here
        raise fail(f"{store.catalog.absent(name)}; nothing was deleted") from exc
    except RagsvcError as exc:
        raise fail(exc) from exc
    finally:
        store.close()
    typer.echo(f"deleted {name}; new writes reuse its space in the catalog, `ragsvc collections compact` "
               "returns it to the disk")


@app.command("compact")
def compact_command(
    keep_cache: Annotated[bool, typer.Option(
        "--keep-cache", help="keep the cached vectors of texts no stored chunk has (by default they are dropped: "
                             "a deleted collection's vectors are most of its space)")] = False,
    data_dir: DataDir = None,
) -> None:
    """Rewrite the catalog file without the space deleted documents and collections left in it. duckdb reuses
    that space for new writes but never shrinks its file. Run it with the server stopped (it needs the catalog
    to itself); a kill at any moment leaves the old catalog or the new one, whole. Ids are kept, so the indexes
    stay valid."""
    from ragsvc.retrieval.vector_store import CATALOG_FILE
    from ragsvc.store.compact import compact

    path = settings(data_dir).store.data_dir / CATALOG_FILE
    typer.echo(f"compacting {path} (one copy of its live rows; the catalog stays as it is until the copy "
               "is checked)", err=True)
    try:
        result = compact(path, keep_cache=keep_cache)
    except RagsvcError as exc:
        raise fail(exc) from exc
    freed = result.before_bytes - result.after_bytes
    typer.echo(f"compacted {path}: {_mb(result.before_bytes)} -> {_mb(result.after_bytes)} "
               f"({_mb(max(freed, 0))} returned to the disk), {sum(result.rows.values())} rows in "
               f"{len(result.rows)} tables; {result.cache_rows_dropped} cached vectors of texts no chunk has "
               "were dropped")


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"
