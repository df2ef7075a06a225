"""`ragsvc ingest`: chunk, embed and store files; and the bundled sample corpus that `serve --sample` loads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer

from ragsvc.cli.common import SAMPLE_COLLECTION, DataDir, fail, open_store
from ragsvc.cli.progress import TqdmProgress
from ragsvc.errors import RagsvcError

app = typer.Typer()
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample"
"""Markdown files shipped inside the package (ragsvc/sample/), so the quick start needs no download."""


@app.command()
def ingest(
    paths: Annotated[list[str], typer.Argument(help="files, folders or globs (.txt, .md, .jsonl)")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="target collection (created if missing)")],
    data_dir: DataDir = None,
    backend: Annotated[str, typer.Option(help="index backend for a new collection")] = "hnsw",
    dims: Annotated[int | None, typer.Option(help="Matryoshka prefix width for a new collection")] = None,
    shards: Annotated[int, typer.Option(help="shards for a new collection")] = 1,
    batch_size: Annotated[int, typer.Option(help="documents per transaction")] = 64,
) -> None:
    """Chunk, embed and store documents. Each batch is one transaction; re-ingesting unchanged files is free."""
    from ragsvc.errors import CollectionNotFound
    from ragsvc.index.spec import Backend, IndexSpec
    from ragsvc.store.files import expand_paths, read_documents

    try:
        files = expand_paths(paths)
        docs = [d for f in files for d in read_documents(f)]
        store = open_store(data_dir)
    except (RagsvcError, ValueError) as exc:
        raise fail(exc) from exc
    try:
        try:
            store.get_collection(collection)
        except CollectionNotFound:
            spec = IndexSpec(backend=cast(Backend, backend), dims=dims, num_shards=shards)  # checked by IndexSpec
            store.create_collection(collection, index=spec)
        with TqdmProgress(f"ingest → {collection}", unit="doc") as progress:
            progress(0, len(docs))  # the bar shows while the first batch loads the embedder
            for start in range(0, len(docs), batch_size):
                batch = docs[start : start + batch_size]
                store.add_documents(collection, batch)
                progress(start + len(batch), len(docs))
        info = store.get_collection(collection)
        typer.echo(f"{collection}: {info.num_documents} documents, {info.num_chunks} chunks ({len(files)} files read)")
    except (RagsvcError, ValueError) as exc:
        raise fail(exc) from exc
    finally:
        store.close()


def ingest_sample(data_dir: Path) -> int:
    """Put the sample corpus shipped inside the package into the `sample` collection (a no-op when present)."""
    from ragsvc.errors import CollectionNotFound
    from ragsvc.store.files import read_documents
    from ragsvc.types import DocumentInput

    docs = [DocumentInput(text=d.text, id=f"sample/{Path(d.id or '').name}", metadata={"topic": Path(d.id or '').stem},
                          source=d.source)
            for path in sorted(SAMPLE_DIR.glob("*.md")) for d in read_documents(path)]
    store = open_store(data_dir)
    try:
        try:
            store.get_collection(SAMPLE_COLLECTION)
        except CollectionNotFound:
            store.create_collection(SAMPLE_COLLECTION)
        store.add_documents(SAMPLE_COLLECTION, docs, progress=True)
        return store.get_collection(SAMPLE_COLLECTION).num_chunks
    finally:
        store.close()
