"""`ragsvc eval run|compare`: run a suite (progress bars, a results table), compare two results files."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ragsvc.cli.common import EXIT_USAGE, cli_text, fail, settings
from ragsvc.cli.progress import tqdm_stages
from ragsvc.errors import RagsvcError

if TYPE_CHECKING:  # rich is loaded when a table is printed, not at start-up
    from rich.console import Console

    from ragsvc.evals.runner import RunOutcome

app = typer.Typer(help="Offline retrieval evaluation: BEIR-format suites, metrics, reports.", no_args_is_help=True)
EXIT_INTERRUPTED = 130


def _console() -> Console:
    from rich.console import Console

    # Redirected output (logs, CI) defaults to 80 columns, which truncates config names in the tables.
    return Console() if sys.stdout.isatty() else Console(width=160)


def _generator(url: str | None, model: str | None) -> Any:
    """An OpenAI-compatible client for `url`, our in-process engine for `model` alone, or None (stage skipped)."""
    if url is not None:
        from ragsvc.llm.openai_client import OpenAIGenerator

        return OpenAIGenerator(url, model=model)
    if model is not None:
        from ragsvc.llm.in_process import InProcessGenerator
        from ragsvc.serving.config import EngineConfig

        return InProcessGenerator.from_config(EngineConfig.from_settings(settings(), model=model))
    return None


@app.command("run")
def run_command(
    suite: Annotated[Path, typer.Argument(help="Suite TOML, e.g. eval/suites/scifact.toml")],
    out: Annotated[Path | None, typer.Option(help="Results JSON path (default eval/results/<suite>-<time>.json)")]
    = None,
    cache_dir: Annotated[Path, typer.Option(help="Store + embedding cache + checkpoints")] = Path("eval/cache"),
    fresh: Annotated[bool, typer.Option(help="Ignore checkpoints of an interrupted run")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars")] = True,
    keep_collections: Annotated[bool, typer.Option(help="Keep each config's collection in the cache store")]
    = False,
    generator_url: Annotated[str | None, typer.Option(
        help="OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1) for the answer stage; skipped without")]
    = None,
    generator_model: Annotated[str | None, typer.Option(
        help="Model name on that server; without --generator-url, a model run in this process (e.g. smollm2)")]
    = None,
    data_root: Annotated[Path | None, typer.Option(
        help="Folder holding the datasets suites name \\[default: RAGSVC_EVAL__DATA_ROOT]")] = None,
    models_root: Annotated[Path | None, typer.Option(
        help="Folder holding the model folders suites name \\[default: RAGSVC_EVAL__MODELS_ROOT]")] = None,
) -> None:
    """Ingest the suite's dataset once, evaluate every config, write results JSON + Markdown report + plots."""
    from ragsvc.evals.results import check_out_path  # light: the checks come before the model's imports

    if not suite.is_file():  # load_suite says the same, but only after the imports below (seconds)
        raise fail(f"{suite}: suite file not found; suites live in eval/suites/*.toml")
    if out is not None:
        try:
            check_out_path(out)
        except RagsvcError as exc:
            raise fail(exc) from exc
    from ragsvc.embed.embedder import embedder_from_settings
    from ragsvc.evals.runner import RunOptions, run_suite  # heavy imports (torch) only when running
    from ragsvc.evals.suite import load_suite

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # At INFO, sentence-transformers draws a progress bar for every single query, and faiss logs its CPU probing.
    for noisy in ("sentence_transformers", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    console = _console()
    started = time.perf_counter()
    try:
        configured = settings().eval
        parsed = load_suite(suite, data_root=data_root or configured.data_root)
        generator = _generator(generator_url, generator_model)
        generate = None
        if generator is not None:
            from ragsvc.evals.answer_stage import text_generator

            generate = text_generator(generator)
        options = RunOptions(out=out, cache_dir=cache_dir, fresh=fresh, generator=generate, llm=generator,
                             models_root=models_root or configured.models_root,
                             progress=tqdm_stages(unit="q") if progress else None, keep_collections=keep_collections)
        try:
            # the embedder `serve` and `ingest` build (precision, backend, batching); the results record its path
            outcome = run_suite(parsed, options=options, embedder=embedder_from_settings(settings().embed))
        finally:
            if hasattr(generator, "close"):
                generator.close()
    except RagsvcError as exc:
        console.print(f"[red]error:[/red] {cli_text(exc)}")
        raise typer.Exit(EXIT_USAGE) from exc
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: finished configs are checkpointed; run again to resume")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    _print_outcome(console, outcome)
    console.print(f"wall time: {time.perf_counter() - started:.1f} s")


def _print_outcome(console: Console, outcome: RunOutcome) -> None:
    from rich.table import Table

    configs = outcome.results.configs
    table = Table("config", *configs[0].metrics, "p50 ms", "p95 ms", "build s")
    for c in configs:
        table.add_row(c.name, *(f"{v:.4f}" for v in c.means().values()), f"{c.latency_ms.p50:.2f}",
                      f"{c.latency_ms.p95:.2f}", f"{c.build_s:.2f}")
    console.print(table)
    if outcome.resumed:
        console.print(f"resumed from checkpoints: {', '.join(outcome.resumed)}")
    console.print(f"results: {outcome.results_path}\nreport:  {outcome.report_path}")


@app.command("compare")
def compare_command(
    a: Annotated[Path, typer.Argument(help="Results JSON A (the reference)")],
    b: Annotated[Path, typer.Argument(help="Results JSON B")],
) -> None:
    """Per-config metric deltas B - A with paired permutation-test p-values."""
    from rich.table import Table

    from ragsvc.evals.compare import compare_results

    console = _console()
    try:
        rows, unmatched = compare_results(a, b)
    except RagsvcError as exc:
        console.print(f"[red]error:[/red] {cli_text(exc)}")
        raise typer.Exit(EXIT_USAGE) from exc
    table = Table("config", "metric", "A", "B", "Δ (B-A)", "p", "queries")
    for r in rows:
        p = "–" if r.p_value is None else f"{r.p_value:.3g}"
        table.add_row(r.config, r.metric, f"{r.a:.4f}", f"{r.b:.4f}", f"{r.delta:+.4f}", p, str(r.num_queries or "–"))
    console.print(table)
    if unmatched:
        console.print(f"configs in only one file: {', '.join(unmatched)}")
