"""`ragsvc search`: search a collection by text from the terminal, as a list or as JSON."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from ragsvc.cli.common import SAMPLE_COLLECTION, DataDir, FilterOption, fail, open_store, parse_filter, settings
from ragsvc.errors import RagsvcError

app = typer.Typer()


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="text to search for")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="collection to search")] = SAMPLE_COLLECTION,
    k: Annotated[int, typer.Option("-k", help="number of hits")] = 10,
    filter: FilterOption = None,
    mode: Annotated[str, typer.Option(help="dense (vectors) | lexical (BM25) | hybrid (both, fused)")] = "dense",
    rerank: Annotated[str | None, typer.Option(help="rescore the top hits: embedder | llm | cross-encoder "
                                                    "(configured with RAGSVC_RERANK__* / RAGSVC_GENERATOR__*)")] = None,
    hyde: Annotated[bool, typer.Option("--hyde", help="search with passages the model imagines (needs a model)")]
    = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the raw result as JSON")] = False,
    data_dir: DataDir = None,
) -> None:
    """Search a collection by text and print the hits, best first."""
    from ragsvc.answer.composition import Composition
    from ragsvc.retrieval.fuse import parse_fusion_mode
    from ragsvc.retrieval.hyde import HydeOptions
    from ragsvc.retrieval.pipeline import RetrievalOptions

    try:
        parsed = parse_filter(filter) if filter else None
        options = RetrievalOptions(mode=parse_fusion_mode(mode), k=k, rerank=rerank,
                                   hyde=HydeOptions() if hyde else None, filter=parsed)
        store = open_store(data_dir)
    except (ValueError, RagsvcError) as exc:
        raise fail(exc) from exc
    # the local model only when a stage asks for one: loading it costs seconds and gigabytes
    wants_model = hyde or rerank == "llm"
    composition = Composition(settings(data_dir), (lambda: _local_generator(data_dir)) if wants_model else lambda: None)
    try:
        load_s = _load_embedder(store) if options.mode != "lexical" else 0.0
        result = composition.pipeline(store).retrieve(collection, query, options)
    except RagsvcError as exc:
        raise fail(exc) from exc
    finally:
        composition.close()
        store.close()
    served = str(result.served_by) if result.stages == ["dense"] else " + ".join(result.stages)
    if as_json:
        typer.echo(json.dumps({"hits": [_hit(h) for h in result.hits], "timings_ms": result.timings_ms,
                               "served_by": served, "stages": result.stages}, indent=2))
        return
    for rank, hit in enumerate(result.hits, start=1):
        snippet = " ".join(hit.text.split())[:160]
        typer.echo(f"{rank:>2}. {hit.score:.4f}  {hit.document_id}\n    {snippet}")
    if not result.hits:
        typer.echo(f"no hits: {_why_none(collection, filtered=bool(parsed), lexical_only=mode == 'lexical')}")
    loading = f", after {load_s:.1f} s loading the embedder" if load_s >= 0.1 else ""
    typer.echo(f"({served}; {result.timings_ms.get('total_ms', 0):.1f} ms{loading})")


def _load_embedder(store: Any) -> float:
    """Load the embedder before the search, so the time printed is the search's, not the model's loading."""
    started = time.perf_counter()
    store.embedder.embed_query("warm-up")  # the first pass also sets up the forward (tracing, thread pools)
    return time.perf_counter() - started


def _why_none(collection: str, *, filtered: bool, lexical_only: bool) -> str:
    """What can leave a search with no hits at all, for the mode and options it ran with."""
    reasons = ["no chunk matches the filter"] if filtered else []
    if lexical_only:
        reasons.append("no word of the query occurs in it (stopwords and one-letter words are not indexed)")
    if not reasons:
        reasons.append(f"{collection} holds no documents")
    return "; or ".join(reasons)


def _local_generator(data_dir: Any) -> Any:
    """The local model, loaded only when a stage asks for one (HyDE, the llm reranker)."""
    from ragsvc.llm.in_process import InProcessGenerator
    from ragsvc.serving.config import EngineConfig

    return InProcessGenerator.from_config(EngineConfig.from_settings(settings(data_dir)))


def _hit(hit: Any) -> dict[str, Any]:
    return {"chunk_id": hit.chunk_id, "document_id": hit.document_id, "score": hit.score, "text": hit.text,
            "metadata": hit.metadata}
