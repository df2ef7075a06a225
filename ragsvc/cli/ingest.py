"""`ragsvc ingest`: chunk, embed and store files; and the bundled sample corpus that `serve --sample` loads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, cast

import typer

from ragsvc.cli.common import SAMPLE_COLLECTION, DataDir, cli_text, fail, open_store, settings
from ragsvc.errors import InvalidInput, RagsvcError

if TYPE_CHECKING:
    import numpy as np

    from ragsvc.config import EmbedSettings
    from ragsvc.retrieval.bulk_ingest import OnError
    from ragsvc.retrieval.vector_store import VectorStore

app = typer.Typer()
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample"
"""Markdown files shipped inside the package (ragsvc/sample/), so the quick start needs no download."""


OnErrorChoice = Literal["skip", "stop", "fail"]


@app.command()
def ingest(
    paths: Annotated[list[str], typer.Argument(
        help="files, folders or globs (.txt, .md, .jsonl); folders are read recursively, not entering hidden ones "
             "(.git, .venv)")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="target collection (created if missing)")],
    data_dir: DataDir = None,
    backend: Annotated[str | None, typer.Option(help="index backend for a new collection \\[default: hnsw]")] = None,
    dims: Annotated[int | None, typer.Option(help="Matryoshka prefix width for a new collection")] = None,
    shards: Annotated[int | None, typer.Option(help="shards for a new collection \\[default: 1]")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="documents per batch (a transaction holds "
                                                                    "one or more)")] = 256,
    workers: Annotated[int, typer.Option(min=1, max=64, help="embedding processes, each with its own model and "
                                                             "a share of the cores; 1 embeds in this process")] = 1,
    on_error: Annotated[OnErrorChoice, typer.Option(
        "--on-error", help="an unreadable file or line, or a document refused: skip it and list it at the end, "
                           "or stop there (fail = stop)")] = "stop",
) -> None:
    """Chunk, embed and store documents; the next batch is embedded while the last one is written.

    Each batch is acknowledged once committed. Running the same command again resumes an interrupted run:
    documents already stored unchanged are skipped by content hash, so nothing is duplicated or lost."""
    from ragsvc.store.files import SUFFIXES, expand_paths, scan_entries

    try:
        expansion = expand_paths(paths)
        files = expansion.files
        if not files:
            besides = expansion.passed_over()
            raise InvalidInput(f"no {', '.join(SUFFIXES)} files in {', '.join(paths)}"
                               + (f" (found {besides})" if besides else "") + "; nothing was written")
        config = settings(data_dir)
        scan = scan_entries(files, max_document_chars=config.api.max_document_chars)
        if scan.unreadable and on_error != "skip":  # stop: refuse the whole load before writing anything
            more = f" (and {scan.num_unreadable - 1} more)" if scan.num_unreadable > 1 else ""
            raise InvalidInput(f"{scan.unreadable[0]}{more}; nothing was written. Fix it, or pass --on-error "
                               "skip to skip what cannot be read and list it at the end")
        store = open_store(data_dir)
    except (RagsvcError, ValueError) as exc:
        raise fail(exc) from exc
    try:
        _ensure_collection(store, collection, backend=backend, dims=dims, shards=shards)
    except (RagsvcError, ValueError) as exc:  # nothing was written yet, so there is nothing to resume
        store.close()
        raise fail(exc) from exc
    try:
        mode: OnError = "skip" if on_error == "skip" else "stop"
        _run(store, collection, files, total=scan.num_entries, batch_size=batch_size, workers=workers, on_error=mode,
             embed_settings=config.embed, max_document_chars=config.api.max_document_chars)
        info = store.get_collection(collection)
        typer.echo(f"{collection}: {info.num_documents} documents, {info.num_chunks} chunks ({len(files)} files read)")
        if (besides := expansion.passed_over()) is not None:
            typer.secho(f"not read from the folders: {besides}", fg=typer.colors.YELLOW, err=True)
        if scan.repeated_ids:
            typer.secho(f"{scan.repeated_ids} document id(s) appear more than once in the input "
                        f"({scan.repeated_entries} entries); each is stored as its last version",
                        fg=typer.colors.YELLOW, err=True)
    except (RagsvcError, ValueError) as exc:
        raise fail(f"{cli_text(exc)}. Batches acknowledged before this are stored; run the same command again to "
                   "resume (stored documents are skipped)") from exc
    except KeyboardInterrupt:
        typer.secho("interrupted: acknowledged batches are stored; run the same command again to resume",
                    fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(code=130) from None
    finally:
        store.close()


def _ensure_collection(store: VectorStore, collection: str, *, backend: str | None, dims: int | None,
                       shards: int | None) -> None:
    """Create the collection from the index options, or say which of them an existing one does not follow:
    they only shape a new collection, and a silent mismatch would leave the user believing otherwise."""
    from ragsvc.errors import CollectionNotFound
    from ragsvc.index.spec import Backend, IndexSpec

    try:
        existing = store.get_collection(collection).index
    except CollectionNotFound:
        spec = IndexSpec(backend=cast(Backend, backend or "hnsw"), dims=dims,
                         num_shards=1 if shards is None else shards)  # checked by IndexSpec
        store.create_collection(collection, index=spec)
        return
    ignored = [f"--{name} {given}" for name, given, has in (("backend", backend, existing.backend),
                                                           ("dims", dims, existing.dims),
                                                           ("shards", shards, existing.num_shards))
               if given is not None and given != has]
    if ignored:
        typer.secho(f"note: {collection} exists (index {existing.backend}, shards={existing.num_shards}, "
                    f"dims={existing.dims or 'all'}); {', '.join(ignored)} only apply to a new collection and were "
                    "ignored",
                    fg=typer.colors.YELLOW, err=True)


def _run(store: VectorStore, collection: str, files: list[Path], *, total: int, batch_size: int, workers: int,
         on_error: OnError, embed_settings: EmbedSettings, max_document_chars: int) -> None:
    """The pipelined load with a progress bar, then its summary (skipped entries named) on stderr."""
    from contextlib import ExitStack

    from ragsvc.cli.ingest_progress import IngestProgress, summary
    from ragsvc.embed.pool import ProcessPoolEmbedder
    from ragsvc.retrieval.bulk_ingest import batch_entries, ingest_pipelined
    from ragsvc.store.files import read_entries

    with ExitStack() as stack:
        embed: Callable[[list[str]], np.ndarray] | None = None
        if workers > 1:
            expected_id = store.get_collection(collection).embedder_id
            pools: list[ProcessPoolEmbedder] = []

            def pooled(texts: list[str]) -> np.ndarray:
                """Start the pool at the first text to embed: a resumed run that finds everything stored never
                loads the workers' models."""
                if not pools:
                    pools.append(stack.enter_context(ProcessPoolEmbedder(
                        embed_settings, num_workers=workers, expected_id=expected_id)))
                return pools[0].embed(texts)

            embed = pooled
        progress = IngestProgress(collection, total=total)
        stack.callback(progress.close)
        entries = (e for f in files for e in read_entries(f, max_document_chars=max_document_chars))
        batches = batch_entries(entries, batch_size=batch_size, on_error=on_error, on_skip=progress.skip)
        report = ingest_pipelined(store, collection, batches, on_error=on_error, embed=embed,
                                  on_commit=progress.acknowledged, on_failure=progress.failed)
    for line in summary(report, progress.skipped, progress.no_text):
        typer.echo(line, err=True)


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
