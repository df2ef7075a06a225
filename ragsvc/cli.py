"""The `ragsvc` command: serve the API, ingest files, search, and the parts' own command groups."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ragsvc.errors import RagsvcError

app = typer.Typer(help="ragsvc: a vector store, retrieval pipeline and local LLM server in one service.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
collections_app = typer.Typer(help="List or delete collections.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that run the peers in the same run and write JSON under eval/results/.",
                        no_args_is_help=True)
app.add_typer(collections_app, name="collections")
app.add_typer(bench_app, name="bench")


def _mount_parts() -> None:
    """The parts' own command groups. Their modules import heavy libraries inside the commands only."""
    from ragsvc.api import model_cli
    from ragsvc.bench import code as code_bench
    from ragsvc.bench import search as search_bench
    from ragsvc.bench import serving as serving_bench
    from ragsvc.code import cli as code_cli
    from ragsvc.evals import cli as evals_cli
    from ragsvc.llm import cli as llm_cli

    app.add_typer(evals_cli.app, name="eval")
    app.add_typer(code_cli.app, name="repo")
    app.add_typer(llm_cli.app, name="llm")
    app.registered_commands.extend(model_cli.app.registered_commands)
    for part in (search_bench, serving_bench, code_bench):
        bench_app.registered_commands.extend(part.app.registered_commands)


_mount_parts()

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="catalog + indexes folder [default: indexes/data, or RAGSVC_STORE__DATA_DIR]")]
SAMPLE_COLLECTION = "sample"


def _settings(data_dir: Path | None = None, **api: Any):  # noqa: ANN202 - returns ragsvc.config.Settings
    from ragsvc.config import ApiSettings, Settings

    settings = Settings()
    updates: dict[str, Any] = {}
    if data_dir is not None:
        updates["store"] = settings.store.model_copy(update={"data_dir": data_dir})
    api = {k: v for k, v in api.items() if v is not None}
    if api:
        updates["api"] = ApiSettings(**{**settings.api.model_dump(), **api})
    return settings.model_copy(update=updates)


def _open_store(data_dir: Path | None):  # noqa: ANN202 - returns VectorStore
    from ragsvc.retrieval.vector_store import VectorStore

    settings = _settings(data_dir)
    return VectorStore.open(settings.store.data_dir, embedder_name=settings.embed.model,
                            save_interval_s=settings.store.save_interval_s)


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def ingest_sample(data_dir: Path) -> int:
    """Put the sample corpus shipped inside the package into the `sample` collection (a no-op when present)."""
    from ragsvc.errors import CollectionNotFound
    from ragsvc.store.files import read_documents
    from ragsvc.types import DocumentInput

    sample_dir = Path(__file__).parent / "sample"
    docs = [DocumentInput(text=d.text, id=f"sample/{Path(d.id or '').name}", metadata={"topic": Path(d.id or '').stem},
                          source=d.source)
            for path in sorted(sample_dir.glob("*.md")) for d in read_documents(path)]
    store = _open_store(data_dir)
    try:
        try:
            store.get_collection(SAMPLE_COLLECTION)
        except CollectionNotFound:
            store.create_collection(SAMPLE_COLLECTION)
        store.add_documents(SAMPLE_COLLECTION, docs, progress=True)
        return store.get_collection(SAMPLE_COLLECTION).num_chunks
    finally:
        store.close()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="interface to bind [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port [default: 8000]")] = None,
    data_dir: DataDir = None,
    sample: Annotated[bool, typer.Option("--sample", help="ingest the bundled sample corpus first")] = False,
    with_model: Annotated[bool, typer.Option(
        "--with-model", help="also host the local LLM (OpenAI-compatible /v1/chat/completions) in this process")] = False,
) -> None:
    """Serve the REST API (OpenAPI docs at /docs). GET /health answers 200 once indexes are loaded."""
    import uvicorn

    from ragsvc.api.app import create_app

    settings = _settings(data_dir, host=host, port=port)
    extensions = []
    if with_model:
        from ragsvc.api.model_app import model_extension
        from ragsvc.serving.config import EngineConfig

        extensions.append(model_extension(EngineConfig(
            model=settings.model.model, dtype=settings.model.dtype, kv_cache_bytes=settings.model.kv_cache_bytes,
            max_num_seqs=settings.model.max_num_seqs, cache_dir=str(settings.store.data_dir / "models"))))
    if sample:
        chunks = ingest_sample(settings.store.data_dir)
        typer.echo(f"sample collection ready: {chunks} chunks in {settings.store.data_dir}")
    base = f"http://{settings.api.host}:{settings.api.port}"
    typer.echo(f"serving on {base} (docs: {base}/docs). Try:\n"
               f"  curl -s {base}/v1/collections/{SAMPLE_COLLECTION}/search -H 'content-type: application/json' "
               f"-d '{{\"query\": \"how does paged attention save memory?\", \"k\": 3}}'")
    uvicorn.run(create_app(settings, extensions=extensions), host=settings.api.host, port=settings.api.port, log_level="info")


@app.command()
def quickstart(data_dir: DataDir = None, port: Annotated[int | None, typer.Option()] = None) -> None:
    """Ingest the bundled sample corpus and serve the API on 127.0.0.1:8000 (the README's first command)."""
    serve(host=None, port=port, data_dir=data_dir, sample=True, with_model=False)


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
    from tqdm import tqdm

    from ragsvc.errors import CollectionNotFound
    from ragsvc.index.spec import IndexSpec
    from ragsvc.store.files import expand_paths, read_documents

    try:
        files = expand_paths(paths)
        docs = [d for f in files for d in read_documents(f)]
        store = _open_store(data_dir)
    except (RagsvcError, ValueError) as exc:
        raise _fail(exc) from exc
    try:
        try:
            store.get_collection(collection)
        except CollectionNotFound:
            store.create_collection(collection, index=IndexSpec(backend=backend, dims=dims, num_shards=shards))
        with tqdm(total=len(docs), unit="doc", desc=f"ingest → {collection}") as bar:
            for start in range(0, len(docs), batch_size):
                batch = docs[start : start + batch_size]
                store.add_documents(collection, batch)
                bar.update(len(batch))
        info = store.get_collection(collection)
        typer.echo(f"{collection}: {info.num_documents} documents, {info.num_chunks} chunks ({len(files)} files read)")
    except (RagsvcError, ValueError) as exc:
        raise _fail(exc) from exc
    finally:
        store.close()


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="text to search for")],
    collection: Annotated[str, typer.Option("--collection", "-c")] = SAMPLE_COLLECTION,
    k: Annotated[int, typer.Option("-k", help="number of hits")] = 10,
    filter: Annotated[str | None, typer.Option(help='metadata filter as JSON, e.g. \'{"type": "md"}\'')] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the raw result as JSON")] = False,
    data_dir: DataDir = None,
) -> None:
    """Search a collection by text and print the hits, best first."""
    try:
        parsed = json.loads(filter) if filter else None
        store = _open_store(data_dir)
    except (json.JSONDecodeError, RagsvcError) as exc:
        raise _fail(exc) from exc
    try:
        result = store.search(collection, query=query, k=k, filter=parsed)
    except RagsvcError as exc:
        raise _fail(exc) from exc
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps({"hits": [_hit(h) for h in result.hits],
                               "timings_ms": result.timings_ms, "served_by": result.served_by}, indent=2))
        return
    for rank, hit in enumerate(result.hits, start=1):
        snippet = " ".join(hit.text.split())[:160]
        typer.echo(f"{rank:>2}. {hit.score:.4f}  {hit.document_id}\n    {snippet}")
    typer.echo(f"({result.served_by}; {result.timings_ms.get('total_ms', 0):.1f} ms)")


def _hit(hit: Any) -> dict[str, Any]:
    return {"chunk_id": hit.chunk_id, "document_id": hit.document_id, "score": hit.score, "text": hit.text,
            "metadata": hit.metadata}


@collections_app.command("list")
def collections_list(data_dir: DataDir = None) -> None:
    """List collections with their sizes and index settings."""
    store = _open_store(data_dir)
    try:
        for info in store.list_collections():
            typer.echo(f"{info.name}: {info.num_documents} docs, {info.num_chunks} chunks, "
                       f"{info.embedder_id}, index={info.index.backend} shards={info.index.num_shards} dims={info.index.dims}")
    finally:
        store.close()


@collections_app.command("delete")
def collections_delete(name: str, data_dir: DataDir = None) -> None:
    """Delete a collection, its documents and its index files."""
    store = _open_store(data_dir)
    try:
        store.delete_collection(name)
    except RagsvcError as exc:
        raise _fail(exc) from exc
    finally:
        store.close()
    typer.echo(f"deleted {name}")


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "GOMP_SPINCOUNT" not in os.environ:  # a spin count the user chose (dedicated box) wins; see README
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: spinning threads starve small boxes
    logging.basicConfig(level=os.environ.get("RAGSVC_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs every CPU-variant probe at INFO
    app()


if __name__ == "__main__":
    main()
