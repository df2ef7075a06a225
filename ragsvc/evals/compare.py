"""Compare two results files config by config: per-metric deltas with paired significance.

Configs are matched by name; each metric is compared on the queries both runs evaluated, with a two-sided
paired permutation (sign-flip) test. Files from older runs without per-query scores still give deltas,
just without p-values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ragsvc.evals.report import paired_delta
from ragsvc.evals.results import load_results


@dataclass(frozen=True, slots=True)
class MetricDelta:
    config: str
    metric: str
    a: float
    b: float
    delta: float
    """b - a over the shared queries (equal to the difference of the means when both ran the same queries)."""
    p_value: float | None
    num_queries: int | None


def compare_results(a_path: Path, b_path: Path) -> tuple[list[MetricDelta], list[str]]:
    """Deltas for every config and metric present in both files, and the config names only one file has."""
    a, b = load_results(a_path), load_results(b_path)
    a_configs = {c.name: c for c in a.configs}
    b_configs = {c.name: c for c in b.configs}
    unmatched = sorted(set(a_configs) ^ set(b_configs))
    rows: list[MetricDelta] = []
    for name, ca in a_configs.items():
        cb = b_configs.get(name)
        if cb is None:
            continue
        for metric, summary_a in ca.metrics.items():
            summary_b = cb.metrics.get(metric)
            if summary_b is None:
                continue
            paired = paired_delta(ca, cb, metric)
            shared = None
            if paired is not None and summary_a.per_query is not None and summary_b.per_query is not None:
                shared = len(set(summary_a.per_query) & set(summary_b.per_query))
            delta = paired[0] if paired else summary_b.mean - summary_a.mean
            rows.append(MetricDelta(name, metric, summary_a.mean, summary_b.mean, delta,
                                    paired[1] if paired else None, shared))
    return rows, unmatched
