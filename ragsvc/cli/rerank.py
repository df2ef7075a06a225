"""`ragsvc rerank train`: fine-tune a cross-encoder reranker on a collection's training judgements."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ragsvc.cli.common import DataDir, fail, open_store
from ragsvc.errors import RagsvcError

app = typer.Typer(help="Rerankers: train a cross-encoder on a collection's judgements.", no_args_is_help=True)


@app.command("train")
def train(
    collection: Annotated[str, typer.Option("--collection", "-c", help="collection holding the judged documents "
                                                                       "(document ids = the qrels' corpus ids)")],
    queries: Annotated[Path, typer.Option(help="training queries, JSON lines with _id and text (BEIR queries.jsonl)")],
    qrels: Annotated[Path, typer.Option(help="training judgements, TSV query-id, corpus-id, score (BEIR "
                                             "qrels/train.tsv); never the split you evaluate on")],
    out: Annotated[Path, typer.Option(help="new folder for the trained model; use it as a cross-encoder reranker "
                                           "(RAGSVC_RERANK__CROSS_ENCODER or rerank.model in a suite)")],
    base: Annotated[str, typer.Option(help="model to start from: a packaged alias (minilm) or a local folder")]
    = "minilm",
    negatives: Annotated[int, typer.Option(min=1, max=64, help="hard negatives per query")] = 4,
    candidates: Annotated[int, typer.Option(min=1, max=200, help="hybrid hits per query the negatives are drawn "
                                                                 "from (the shortlist a reranker rescores)")] = 20,
    epochs: Annotated[int, typer.Option(min=1, max=20)] = 1,
    batch_size: Annotated[int, typer.Option(min=1, max=512)] = 16,
    learning_rate: Annotated[float, typer.Option(min=1e-7, max=1e-2)] = 3e-5,
    max_length: Annotated[int, typer.Option(min=16, max=512, help="tokens of query + passage")] = 256,
    seed: Annotated[int, typer.Option()] = 0,
    data_dir: DataDir = None,
) -> None:
    """Fine-tune a cross-encoder (from MiniLM by default) on the judged query-document pairs of --qrels, with
    hard negatives from this collection's own hybrid search, and save it to --out.

    The trained model is supervised on this collection's domain: report its figures apart from zero-shot ones.
    """
    from ragsvc.cli.progress import TqdmProgress
    from ragsvc.embed.embedder import resolve_model_path
    from ragsvc.evals.loaders import load_qrels, load_queries
    from ragsvc.retrieval.pipeline import RetrievalOptions, RetrievalPipeline
    from ragsvc.retrieval.rerank_train import TrainOptions, mine_pairs, train_cross_encoder

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise fail(f"{out} already exists; choose a new folder for the model, or remove that one")
    try:
        options = TrainOptions(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                               max_length=max_length, seed=seed)
        base_path = resolve_model_path(base)
        judged = load_qrels(qrels)
        texts = load_queries(queries)
        store = open_store(data_dir)
    except (RagsvcError, OSError, ValueError) as exc:
        raise fail(exc) from exc
    try:
        store.get_collection(collection)
        search = RetrievalPipeline(store)
        shortlist = RetrievalOptions(mode="hybrid", k=candidates, candidates=max(candidates, 100))

        def ranked(query: str) -> list[str]:
            return [str(h.document_id) for h in search.retrieve(collection, query, shortlist).hits]

        def text(document_id: str) -> str | None:
            try:
                return str(store.get_document(collection, document_id)["text"])
            except RagsvcError:
                return None

        with TqdmProgress("hard negatives", unit="q") as progress:
            done = [0]

            def ranked_with_progress(query: str) -> list[str]:
                done[0] += 1
                progress(done[0], len(judged))
                return ranked(query)

            pairs = mine_pairs(texts, judged, ranked_with_progress, text, negatives=negatives,
                               candidates=candidates, seed=seed)
        with TqdmProgress("training", unit="step") as bar:
            report = train_cross_encoder(pairs, base_path, out, options=options,
                                         on_step=lambda step, total, loss: bar(step, total))
    except RagsvcError as exc:
        raise fail(exc) from exc
    finally:
        store.close()
    typer.echo(json.dumps({"out": str(out), "queries": report.queries, "pairs": report.pairs,
                           "positives": report.positives, "steps": report.steps, "seconds": round(report.seconds, 1),
                           "first_loss": round(report.first_loss, 4), "last_loss": round(report.last_loss, 4)}))
