"""Expected vs written vs sampled importance on a labelled set: which one orders memories as they should be?

The set (eval/data/importance/observations.jsonl) gives each observation the rating its author intended,
fixed before any model was run. For each way of reading the model we report Spearman's rank correlation with
those ratings: `expected` (Σ p(s)·s from logprobs), `written` (the integer in the greedy reply) and `sampled`
(an integer drawn at temperature 1). An unparseable integer counts as 5.5, the middle of the scale: leaving it
out would reward a reader for failing on the hard cases. A paired bootstrap over observations gives a 95%
interval for the difference expected - written (and expected - sampled).

Run: `python -m ragsvc.agents.importance_eval MODEL [--cache-dir DIR] [--limit N]` (JSON to stdout); MODEL is
an EngineConfig model ("smollm2", a folder, or a .gguf path).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from ragsvc.agents.importance import ImportanceOptions, ImportanceScorer
from ragsvc.errors import InvalidInput
from ragsvc.llm.generator import Generator

DEFAULT_SET = Path("eval/data/importance/observations.jsonl")
MIDDLE = 5.5


def load_labelled(path: Path) -> list[dict[str, Any]]:
    """Rows {"id", "text", "rating"} from a JSONL file; errors name the file and line."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path}:{number}: not JSON ({exc.msg})") from exc
        except RecursionError as exc:
            raise InvalidInput(f"{path}:{number}: JSON nested too deeply to read") from exc
        if not (isinstance(row, dict) and isinstance(row.get("text"), str)
                and isinstance(row.get("rating"), int | float)):
            raise InvalidInput(f"{path}:{number}: each row needs a string 'text' and a numeric 'rating'")
        rows.append(row)
    return rows


def spearman(labels: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray) -> float:
    """Spearman's rho (ties get average ranks); 0 when either side is constant (no order to agree with)."""
    if len(set(np.asarray(values).tolist())) < 2 or len(set(np.asarray(labels).tolist())) < 2:
        return 0.0
    return float(spearmanr(labels, values).statistic)


def paired_bootstrap(labels: np.ndarray, a: np.ndarray, b: np.ndarray, *, rounds: int = 2000,
                     seed: int = 0) -> tuple[float, float]:
    """95% interval of spearman(labels, a) - spearman(labels, b) over observations resampled together."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(rounds):
        pick = rng.integers(0, len(labels), len(labels))
        diffs.append(spearman(labels[pick], a[pick]) - spearman(labels[pick], b[pick]))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return round(float(low), 3), round(float(high), 3)


def evaluate(generator: Generator, rows: Sequence[dict[str, Any]], *, batch_size: int = 8,
             seed: int = 0) -> dict[str, Any]:
    """Score every row three ways and compare each with the intended ratings."""
    scorer = ImportanceScorer(generator, options=ImportanceOptions(sample_temperature=1.0, seed=seed))
    started = time.perf_counter()
    scores = []
    for start in range(0, len(rows), batch_size):
        scores.extend(scorer.score_many([r["text"] for r in rows[start:start + batch_size]]))
    elapsed = time.perf_counter() - started
    labels = np.array([float(r["rating"]) for r in rows])
    expected = np.array([s.expected for s in scores])
    written = np.array([MIDDLE if s.written is None else float(s.written) for s in scores])
    sampled = np.array([MIDDLE if s.sampled is None else float(s.sampled) for s in scores])
    return {
        "model": generator.model, "num_observations": len(rows), "seconds": round(elapsed, 1),
        "spearman": {"expected": round(spearman(labels, expected), 3), "written": round(spearman(labels, written), 3),
                     "sampled_t1": round(spearman(labels, sampled), 3)},
        "expected_minus_written_ci95": paired_bootstrap(labels, expected, written, seed=seed),
        "expected_minus_sampled_ci95": paired_bootstrap(labels, expected, sampled, seed=seed),
        "unparseable": {"written": sum(s.written is None for s in scores),
                        "sampled_t1": sum(s.sampled is None for s in scores)},
        "mean_score_mass": round(float(np.mean([s.mass for s in scores])), 3),
        "distinct_values": {"written": len(set(written.tolist())), "sampled_t1": len(set(sampled.tolist()))},
        "mean_by_rating": {int(r): {"expected": round(float(expected[labels == r].mean()), 2),
                                    "written": round(float(written[labels == r].mean()), 2)}
                           for r in sorted(set(labels.tolist()))},
        "rows": [{"id": r["id"], "rating": r["rating"], "expected": round(s.expected, 3), "written": s.written,
                  "sampled_t1": s.sampled, "mass": round(s.mass, 3)} for r, s in zip(rows, scores, strict=True)],
    }


def main(argv: Sequence[str] | None = None) -> None:
    from ragsvc.llm.in_process import InProcessGenerator
    from ragsvc.serving.config import EngineConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--data", type=Path, default=DEFAULT_SET)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    rows = load_labelled(args.data)[: args.limit]
    with InProcessGenerator.from_config(EngineConfig(model=args.model, cache_dir=args.cache_dir)) as generator:
        report = evaluate(generator, rows, batch_size=args.batch_size)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
