"""`ragsvc rerank train`: fine-tune a cross-encoder reranker on a collection's training judgements."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ragsvc.cli.common import DataDir, fail, open_store
from ragsvc.errors import RagsvcError

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

    from ragsvc.retrieval.rerank_holdout import HoldoutReport
    from ragsvc.retrieval.rerank_train import TrainOptions, TrainReport
    from ragsvc.retrieval.vector_store import VectorStore

AUTO_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 0.9)
"""First-stage weights the held-out check tries when --first-stage-weight is not given."""
AUTO_WEIGHT = 0.5
"""...and the weight saved when there is no check (--holdout 0)."""

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
    negatives: Annotated[int, typer.Option(min=1, max=64, help="hard negatives per relevant document")] = 4,
    candidates: Annotated[int, typer.Option(min=1, max=200, help="hybrid hits per query the negatives are drawn "
                                                                 "from, and the shortlist the held-out check "
                                                                 "reranks (as a reranker would at query time)")] = 20,
    epochs: Annotated[int, typer.Option(min=1, max=20, help="passes over the training pairs")] = 1,
    max_steps: Annotated[int, typer.Option(min=0, max=100_000, help="step budget, whatever --epochs says "
                                                                   "(0: no budget)")] = 150,
    batch_size: Annotated[int, typer.Option(min=1, max=256, help="groups per step (a relevant document and its "
                                                                 "negatives)")] = 4,
    learning_rate: Annotated[float, typer.Option(min=1e-7, max=1e-2, help="for the pretrained encoder")] = 1e-4,
    head_learning_rate: Annotated[float, typer.Option(min=1e-7, max=1e-1, help="for the new classifier head")]
    = 1e-3,
    max_length: Annotated[int, typer.Option(min=16, max=512, help="tokens of query + passage")] = 128,
    first_stage_weight: Annotated[float | None, typer.Option(
        min=0.0, max=0.99, help="share of the first stage's (normalised) score in the served score, the model's "
                                "being the rest; saved with the model for the cross-encoder reranker. Default: the "
                                "best of 0, 0.25, 0.5, 0.75, 0.9 on the held-out queries (0.5 with --holdout 0)")]
    = None,
    holdout: Annotated[float, typer.Option(min=0.0, max=0.5, help="share of the judged queries kept out of "
                                                                  "training for the held-out check (0: no check)")]
    = 0.1,
    force: Annotated[bool, typer.Option("--force", help="save to --out even if the trained model ranks the "
                                                        "held-out queries no better than the first stage")] = False,
    seed: Annotated[int, typer.Option(help="seed of the pair sampling and training order")] = 0,
    data_dir: DataDir = None,
) -> None:
    """Fine-tune a cross-encoder (from MiniLM by default) on the judged query-document pairs of --qrels, with
    hard negatives from this collection's own hybrid search, check it on held-out queries, and save it.

    The check ranks each held-out query's hybrid shortlist as it is and reordered by the new model's score
    blended with the first stage's (at --first-stage-weight, or the best of a few). If that is no better
    (nDCG@10), the model is not saved to --out but set aside in OUT.rejected (replacing an older one there) and
    the command fails with exit code 2, unless --force. Both figures are in ragsvc-training.json in the
    saved folder. The trained model is supervised on this collection's domain: report its figures apart from
    zero-shot ones.
    """
    from ragsvc.embed.embedder import resolve_model_path
    from ragsvc.evals.loaders import load_qrels, load_queries
    from ragsvc.retrieval.rerank_holdout import split_holdout
    from ragsvc.retrieval.rerank_train import TrainOptions, save_cross_encoder

    rejected = out.with_name(out.name + ".rejected")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise fail(f"{out} already exists; choose a new folder for the model, or remove that one")
    try:
        options = TrainOptions(epochs=epochs, max_steps=max_steps or None, batch_size=batch_size,
                               learning_rate=learning_rate, head_learning_rate=head_learning_rate,
                               max_length=max_length, seed=seed)
        base_path = resolve_model_path(base)
        judged = load_qrels(qrels)
        texts = load_queries(queries)
        training, held = split_holdout(judged, fraction=holdout, seed=seed)
        store = open_store(data_dir)
    except (RagsvcError, OSError, ValueError) as exc:
        raise fail(exc) from exc
    try:
        store.get_collection(collection)
        model, report, check = _train_and_check(store, collection, texts, training, held, base_path, options,
                                                negatives=negatives, candidates=candidates,
                                                weights=AUTO_WEIGHTS if first_stage_weight is None
                                                else (first_stage_weight,))
        accepted = check is None or check.accepted
        destination = out if accepted or force else rejected
        chosen = check.first_stage_weight if check is not None else (
            AUTO_WEIGHT if first_stage_weight is None else first_stage_weight)
        record = {"first_stage_weight": chosen,
                  "base": base if not Path(base).is_dir() else Path(base).name, "collection": collection,
                  "queries_file": queries.name, "qrels_file": qrels.name, "negatives": negatives,
                  "candidates": candidates, "options": asdict(options), "train": report.as_dict(),
                  "holdout": check.as_dict() if check is not None else None, "forced": not accepted and force}
        if destination == rejected and rejected.exists():
            shutil.rmtree(rejected)  # a name only this command writes: the last rejected run
        save_cross_encoder(model, destination, record)
    except RagsvcError as exc:
        raise fail(exc) from exc
    finally:
        store.close()
    typer.echo(json.dumps({"out": str(destination), "train": record["train"], "holdout": record["holdout"]}))
    if check is not None and destination == rejected:
        raise fail(f"the trained model ranks the {check.queries} held-out queries no better than the first stage "
                   f"(nDCG@{check.k} {check.reranked_ndcg:.4f} at first-stage weight {check.first_stage_weight}, "
                   f"{check.model_ndcg:.4f} alone, vs {check.first_stage_ndcg:.4f}), so it was set "
                   f"aside in {rejected}, not saved to {out}; train longer (--max-steps, --epochs), change the "
                   "learning rates, or pass --force to keep it anyway")


def _train_and_check(store: VectorStore, collection: str, texts: Mapping[str, str],
                     training: Mapping[str, Mapping[str, int]], held: Mapping[str, Mapping[str, int]],
                     base: Path, options: TrainOptions, *, negatives: int, candidates: int,
                     weights: Sequence[float]) -> tuple[CrossEncoder, TrainReport, HoldoutReport | None]:
    """Mine groups from `training`, train, then run the held-out check on `held` (None when it is empty)."""
    from ragsvc.cli.progress import TqdmProgress
    from ragsvc.retrieval.pipeline import RetrievalOptions, RetrievalPipeline
    from ragsvc.retrieval.rerank_holdout import holdout_check
    from ragsvc.retrieval.rerank_train import mine_groups, train_cross_encoder

    search = RetrievalPipeline(store)
    shortlist = RetrievalOptions(mode="hybrid", k=candidates, candidates=max(candidates, 100))

    def scored(query: str) -> list[tuple[str, float]]:
        return [(str(h.document_id), h.score) for h in search.retrieve(collection, query, shortlist).hits]

    def ranked(query: str) -> list[str]:
        return [doc for doc, _ in scored(query)]

    def text(document_id: str) -> str | None:
        try:
            return str(store.get_document(collection, document_id)["text"])
        except RagsvcError:
            return None

    with TqdmProgress("hard negatives", unit="q") as progress:
        done = [0]

        def ranked_with_progress(query: str) -> list[str]:
            done[0] += 1
            progress(done[0], len(training))
            return ranked(query)

        groups = mine_groups(texts, training, ranked_with_progress, text, negatives=negatives,
                             candidates=candidates, seed=options.seed)
    with TqdmProgress("training", unit="step") as bar:
        model, report = train_cross_encoder(groups, base, options=options,
                                            on_step=lambda step, total, loss: bar(step, total))
    if not held:
        return model, report, None

    def score(query: str, passages: Sequence[str]) -> list[float]:
        return [float(s) for s in model.predict([(query, p) for p in passages], show_progress_bar=False)]

    with TqdmProgress("held-out check", unit="q") as checked:
        check = holdout_check(texts, held, scored, text, score, first_stage_weights=weights,
                              candidates=candidates, on_query=checked)
    return model, report, check
