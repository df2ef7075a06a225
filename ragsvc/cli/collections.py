"""`ragsvc collections list|delete`: what the store holds, and removing a collection with its index files."""

from __future__ import annotations

import typer

from ragsvc.cli.common import DataDir, fail, open_store
from ragsvc.errors import RagsvcError

app = typer.Typer(help="List or delete collections.", no_args_is_help=True)


@app.command("list")
def list_command(data_dir: DataDir = None) -> None:
    """List collections with their sizes and index settings."""
    store = open_store(data_dir)
    try:
        for info in store.list_collections():
            index = info.index
            typer.echo(f"{info.name}: {info.num_documents} docs, {info.num_chunks} chunks, {info.embedder_id}, "
                       f"index={index.backend} shards={index.num_shards} dims={index.dims}")
    finally:
        store.close()


@app.command("delete")
def delete_command(name: str, data_dir: DataDir = None) -> None:
    """Delete a collection, its documents and its index files."""
    store = open_store(data_dir)
    try:
        store.delete_collection(name)
    except RagsvcError as exc:
        raise fail(exc) from exc
    finally:
        store.close()
    typer.echo(f"deleted {name}")
