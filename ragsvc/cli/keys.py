"""`ragsvc keys create|list|revoke`: API keys in the catalog of `--data-dir` (store/keys.py).

The catalog can be opened by one process at a time: while `ragsvc serve` runs on that folder, manage keys
through its API instead (POST/GET/DELETE /v1/keys with an admin key). Each change also rewrites the keys file
beside the catalog, which `ragsvc serve-model` reads.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from ragsvc.cli.common import DataDir, fail, settings

if TYPE_CHECKING:
    from ragsvc.store.catalog import Catalog

app = typer.Typer(help="Create, list or revoke API keys (stored hashed in the catalog).", no_args_is_help=True)


def _catalog(data_dir: DataDir) -> Catalog:
    from ragsvc.errors import RagsvcError
    from ragsvc.retrieval.vector_store import CATALOG_FILE
    from ragsvc.store.catalog import Catalog

    try:
        return Catalog(settings(data_dir).store.data_dir / CATALOG_FILE)
    except RagsvcError as exc:
        raise fail(exc) from exc


@app.command("create")
def create_command(
    name: Annotated[str, typer.Argument(help="who or what uses the key, e.g. ci-reader")],
    scope: Annotated[list[str], typer.Option("--scope", help="read, write or admin (repeatable; admin > write > "
                                                             "read)")] = ["read"],  # noqa: B006 (typer reads it)
    collection: Annotated[list[str] | None, typer.Option(
        "--collection", help="limit the key to this collection (repeatable) \\[default: all]")] = None,
    data_dir: DataDir = None,
) -> None:
    """Create a key and print it once: only its hash is stored."""
    from ragsvc.errors import RagsvcError
    from ragsvc.store.keys import mint_key

    catalog = _catalog(data_dir)
    try:
        new = mint_key(name, scope, collection or [])
        catalog.api_keys().add(new.record)
        existing = {c.name for c in catalog.list_collections()}
    except RagsvcError as exc:
        raise fail(exc) from exc
    finally:
        catalog.close()
    missing = [c for c in new.record.collections if c not in existing]
    if missing:  # allowed (a key made before its collection), but a typo would otherwise go unnoticed
        typer.secho(f"note: no collection {', '.join(map(repr, missing))} exists yet in this data folder; the key "
                    "works on it once it is created", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"created key {new.record.id} ({', '.join(new.record.scopes)}"
               + (f"; collections {', '.join(new.record.collections)}" if new.record.collections else "") + ")")
    typer.echo("send it as `Authorization: Bearer <key>`; it is shown only now:")
    typer.echo(new.token)


@app.command("list")
def list_command(data_dir: DataDir = None) -> None:
    """List keys (ids, names, scopes, collections; never secrets), revoked ones marked."""
    catalog = _catalog(data_dir)
    try:
        keys = catalog.api_keys().list()
    finally:
        catalog.close()
    if not keys:
        typer.echo("no API keys; create one with `ragsvc keys create NAME` (a server on 127.0.0.1 needs none)")
        return
    rows = [("id", "name", "scopes", "collections", "created", "state")]
    for key in keys:
        created = datetime.datetime.fromtimestamp(key.created_at, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        rows.append((key.id, key.name, ",".join(key.scopes), ", ".join(key.collections) or "all",
                     created, "active" if key.active else "revoked"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        typer.echo("  ".join([cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + [row[-1]]))


@app.command("revoke")
def revoke_command(key_id: Annotated[str, typer.Argument(help="the id `keys list` shows")],
                   data_dir: DataDir = None) -> None:
    """Revoke a key: it answers 401 from then on (the model server notices within a second)."""
    from ragsvc.errors import RagsvcError

    catalog = _catalog(data_dir)
    try:
        catalog.api_keys().revoke(key_id)
    except RagsvcError as exc:
        raise fail(exc) from exc
    finally:
        catalog.close()
    typer.echo(f"revoked {key_id}")
