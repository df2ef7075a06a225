"""Markdown report and PNG plots for one run's results, written beside the results JSON (atomically).

Plots use matplotlib's object API (`Figure` + Agg canvas), not pyplot, so no global state or display is
touched and reports can be written from threads and servers. matplotlib comes with the `eval` extra
(`pip install ragsvc[eval]`); without it the report is written without plots.
"""

from __future__ import annotations

import importlib.util
import io
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragsvc.evals.records import ConfigResult, RunResult
from ragsvc.evals.results import write_atomic
from ragsvc.evals.stats import paired_difference_ci, paired_permutation_test

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

PRIMARY = "ndcg@10"


def paired_delta(base: ConfigResult, other: ConfigResult, metric: str) -> tuple[float, float] | None:
    """(mean(other) - mean(base), two-sided p) over the queries both evaluated; None if not comparable."""
    a, b = _per_query(base, metric), _per_query(other, metric)
    if not a or not b:
        return None
    common = sorted(set(a) & set(b))
    if not common:
        return None
    xs, ys = [a[q] for q in common], [b[q] for q in common]
    return sum(ys) / len(ys) - sum(xs) / len(xs), paired_permutation_test(xs, ys)


def _per_query(config: ConfigResult, metric: str) -> Mapping[str, float] | None:
    summary = config.metrics.get(metric)
    return None if summary is None else summary.per_query


def _png(fig: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    write_atomic(path, buffer.getvalue())


def plot_metrics(results: RunResult, path: Path) -> None:
    """One panel per metric: a bar per config with its bootstrap 95% interval."""
    configs = results.configs
    metrics = list(configs[0].metrics) if configs else []
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * max(len(metrics), 1), 3.6))
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        values = [c.metrics[metric].mean for c in configs]
        cis = [c.metrics[metric].ci or (v, v) for c, v in zip(configs, values, strict=True)]
        errors = [[v - lo for v, (lo, _) in zip(values, cis, strict=True)],
                  [hi - v for v, (_, hi) in zip(values, cis, strict=True)]]
        ax.bar(range(len(configs)), values, yerr=errors, capsize=3, color="#4C72B0")
        ax.set_xticks(range(len(configs)), [c.name for c in configs], rotation=45, ha="right", fontsize=8)
        ax.set_title(metric)
        ax.set_ylim(0, 1)
    num_queries = "?" if "num_queries" in results.absent else results.num_queries
    fig.suptitle(f"{results.suite}: mean over {num_queries} queries (95% bootstrap CI)",
                 y=1.04)
    _png(fig, path)


def plot_tradeoff(results: RunResult, path: Path, *, metric: str = "recall@10") -> None:
    """Quality against p50 search latency, one labelled point per config."""
    configs = [c for c in results.configs if metric in c.metrics]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot(1, 1, 1)
    for i, c in enumerate(configs):
        x, y = c.latency_ms.p50, c.metrics[metric].mean
        ax.scatter([x], [y], color="#DD8452")
        # alternate label offsets: configs with near-equal numbers would otherwise print over each other
        ax.annotate(c.name, (x, y), textcoords="offset points", xytext=(4, 4 if i % 2 else -10), fontsize=8)
    ax.set_xlabel("p50 search latency (ms, query embedding excluded)")
    ax.set_ylabel(metric)
    ax.set_title(f"{results.suite}: {metric} vs latency")
    ax.grid(alpha=0.3)
    _png(fig, path)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _config_rows(results: RunResult) -> list[str]:
    configs = results.configs
    metrics = list(configs[0].metrics) if configs else []
    base = results.config(results.baseline) or (configs[0] if configs else None)
    head = ["config", *metrics, f"Δ {PRIMARY} vs {base.name if base else '-'} (p)", "p50 ms", "p95 ms",
            "build s", "index MB", "served by"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in configs:
        cells = [c.name]
        for m in metrics:
            interval = c.metrics[m].ci
            ci = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval is not None and m == PRIMARY else ""
            cells.append(f"{c.metrics[m].mean:.3f}{ci}")
        delta = paired_delta(base, c, PRIMARY) if base is not None and c is not base else None
        cells.append("–" if delta is None else f"{delta[0]:+.3f} (p={delta[1]:.3g})")
        cells += [_fmt(c.latency_ms.p50, 2), _fmt(c.latency_ms.p95, 2), _fmt(c.build_s, 2),
                  _fmt(c.index_bytes / 1e6, 2), ", ".join(c.served_by or {}) or "–"]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _references(results: RunResult) -> list[str]:
    refs = results.references
    if not refs:
        return []
    lines = ["", f"## Published {PRIMARY} for comparison", "", "| system | " + PRIMARY + " |", "|---|---|"]
    lines += [f"| {label} | {value:.3f} |" for label, value in refs.items()]
    lines += [f"| ours: {c.name} | {c.means().get(PRIMARY, float('nan')):.3f} |" for c in results.configs]
    return lines


def _stage_deltas(results: RunResult) -> list[str]:
    """Each config that names `compare_to` (the config it adds one stage to): the paired delta it buys."""
    by_name = {c.name: c for c in results.configs}
    pairs = [(by_name[c.params["compare_to"]], c) for c in results.configs
             if c.params is not None and c.params.get("compare_to") in by_name]
    if not pairs:
        return []
    metrics = list(results.configs[0].metrics)
    lines = ["", "## What each stage adds (paired over the same queries)", "",
             "Δ = config − the config it extends; [95% bootstrap CI of the paired difference], p from the paired "
             "permutation test.", "", "| config | vs | " + " | ".join(f"Δ {m}" for m in metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for base, other in pairs:
        cells = []
        for m in metrics:
            a, b = _per_query(base, m) or {}, _per_query(other, m) or {}
            common = sorted(set(a) & set(b))
            if not common:
                cells.append("–")
                continue
            xs, ys = [a[q] for q in common], [b[q] for q in common]
            low, high = paired_difference_ci(xs, ys)
            delta = sum(ys) / len(ys) - sum(xs) / len(xs)
            cells.append(f"{delta:+.3f} [{low:+.3f}, {high:+.3f}] (p={paired_permutation_test(xs, ys):.3g})")
        lines.append(f"| {other.name} | {base.name} | " + " | ".join(cells) + " |")
    return lines


_STAGES = ("hyde_ms", "dense_ms", "lexical_ms", "fuse_ms", "rerank_ms", "total_ms")


def _stage_costs(results: RunResult) -> list[str]:
    """Per-stage wall time per query (p50 / mean ms) of pipeline configs, with HyDE and rerank details."""
    staged = [(c, c.stages) for c in results.configs if c.stages]
    if not staged:
        return []
    lines = ["", "## Stage latency per query (ms, p50 / mean)", "",
             "Pipeline configs run from the query text, so `dense` includes embedding the query.", "",
             "| config | " + " | ".join(s.removesuffix("_ms") for s in _STAGES) + " | notes |",
             "|---|" + "---|" * (len(_STAGES) + 1)]
    for c, stages in staged:
        latency = stages.get("latency_ms", {})
        cells = [f"{latency[s]['p50']:.1f} / {latency[s]['mean']:.1f}" if s in latency else "–" for s in _STAGES]
        notes = []
        if "hyde" in stages:
            hyde = stages["hyde"]
            notes.append(f"HyDE ({hyde.get('model', '?')}): generate {hyde['generate_ms']['mean']:.0f} ms, "
                         f"embed {hyde['embed_ms']['mean']:.0f} ms, {hyde['completion_tokens_mean']:.0f} tokens")
            if "prefetch" in hyde:
                ahead = hyde["prefetch"]
                notes.append(f"passages generated {ahead['queries_at_once']} queries at a time: "
                             f"{ahead['ms_per_query']:.0f} ms/query amortised")
        if "rerank" in stages:
            counts = stages["rerank"].get("counts", {})
            notes.append(", ".join(f"{k} {v}" for k, v in counts.items()))
        lines.append(f"| {c.name} | " + " | ".join(cells) + f" | {'; '.join(notes) or '–'} |")
    return lines


def _strategy_rows(answer: Mapping[str, Any]) -> list[str]:
    lines = ["| strategy | EM | F1 | match | supporting recall | retrievals | answer tokens | p50 s | wall s |",
             "|---|" + "---|" * 8]
    for name, s in answer["strategies"].items():
        m = s["metrics"]
        lines.append(f"| {name} | {_fmt(m['em'])} | {_fmt(m['f1'])} | {_fmt(m.get('match'))} | "
                     f"{_fmt(m['support_recall'])} | {_fmt(s['retrievals_mean'], 2)} | "
                     f"{_fmt(s['completion_tokens_mean'], 1)} | {s['latency_ms']['p50'] / 1000:.2f} | "
                     f"{_fmt(s['wall_s'], 1)} |")
    lines += ["", "| paired over the same questions | Δ EM [CI] (p) | Δ F1 [CI] (p) | Δ match [CI] (p) |",
              "|---|---|---|---|"]
    for pair, deltas in answer["paired"].items():
        cells = [f"{d['delta']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] (p={d['p']:.3g})" if d else "–"
                 for d in (deltas.get(m) for m in ("em", "f1", "match"))]
        lines.append(f"| {pair} | " + " | ".join(cells) + " |")
    return lines


def _answer_section(results: RunResult) -> list[str]:
    answer = results.answer
    if not answer:
        return []
    if "skipped" in answer:
        return ["", "## Answer stage", "", f"Skipped: {answer['skipped']}."]
    if "strategies" in answer:
        return ["", "## Answer strategies", "",
                f"Model `{answer['model']}`, retrieval from config `{answer['config']}`, {answer['num_examples']} "
                f"questions, {answer['concurrency']} at a time; EM, F1 and match (gold answer inside the answer) on "
                "the answer's first line, citation markers removed.", "",
                *_strategy_rows(answer)]
    lines = ["", "## Answer stage", "", f"Config `{answer['config']}`, {answer['num_examples']} questions.", ""]
    lines += [f"- {k}: {_fmt(v)}" for k, v in answer["metrics"].items()]
    return lines


def render_markdown(results: RunResult, *, metrics_png: str | None, tradeoff_png: str | None) -> str:
    lines = [
        f"# Evaluation: {results.suite}",
        "",
        f"- dataset: `{results.dataset}` ({results.num_documents} documents, {results.num_queries} queries)",
        f"- embedder: `{results.embedder}`{f' ({results.embed_path})' if results.embed_path else ''}; "
        f"language model: `{results.llm or 'none'}`; "
        f"git `{results.git_sha}`; {results.created_at}",
        f"- corpus ingest (embedding, cached after the first run): {_fmt(results.ingest_s, 1)} s; "
        f"query embedding {_fmt(results.query_embed_ms, 2)} ms/query (batched)",
        "- Δ is the paired difference over the same queries; p from a two-sided paired permutation test "
        "(10,000 sign flips). Latency is the search call: `index` configs are given the query vector, `pipeline` "
        "configs start from the text; work done ahead for all queries (HyDE passages) is in the stage table.",
        "",
        *_config_rows(results),
        *_stage_deltas(results),
        *_stage_costs(results),
        *_references(results),
        *_answer_section(results),
        "",
    ]
    if metrics_png and tradeoff_png:
        lines += [f"![metrics]({metrics_png})", "", f"![recall vs latency]({tradeoff_png})", ""]
    return "\n".join(lines)


def write_report(results: RunResult, json_path: Path) -> Path:
    """Write `<stem>.md`, `<stem>-metrics.png` and `<stem>-tradeoff.png` beside `json_path`."""
    stem = json_path.with_suffix("")
    metrics_png, tradeoff_png = Path(f"{stem}-metrics.png"), Path(f"{stem}-tradeoff.png")
    plotted = bool(results.configs) and importlib.util.find_spec("matplotlib") is not None
    if plotted:
        plot_metrics(results, metrics_png)
        plot_tradeoff(results, tradeoff_png)
    elif results.configs:
        logger.warning("matplotlib is not installed: the report has no plots (pip install 'ragsvc[eval]')")
    md_path = Path(f"{stem}.md")
    text = render_markdown(results, metrics_png=metrics_png.name if plotted else None,
                           tradeoff_png=tradeoff_png.name if plotted else None)
    write_atomic(md_path, text.encode("utf-8"))
    return md_path
