"""Resampling statistics over queries: bootstrap confidence intervals and paired significance tests.

Queries are the unit of resampling (Sakai 2006; Smucker et al. 2007): a difference between two configs is
judged on the same queries, so the tests are paired. Seeds are fixed so reports are reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bootstrap_ci(
    values: Sequence[float], *, num_samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; (mean, mean) for fewer than two values."""
    data = np.asarray(values, dtype=np.float64)  # (num_queries,)
    if data.size < 2:
        mean = float(data.mean()) if data.size else 0.0
        return mean, mean
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, data.size, size=(num_samples, data.size))  # (samples, num_queries)
    means = data[idx].mean(axis=1)  # (samples,)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_permutation_test(
    a: Sequence[float], b: Sequence[float], *, num_samples: int = 10000, seed: int = 0
) -> float:
    """Two-sided p-value for mean(b - a) != 0 by randomly flipping the sign of each paired difference.

    This is the randomisation test recommended for IR evaluation (Smucker, Allan & Carterette 2007). The
    observed statistic is counted among the samples, so p is never 0.
    """
    diffs = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)  # (num_queries,)
    if diffs.shape != (len(a),) or len(a) != len(b):
        raise ValueError(f"paired test needs equal-length inputs, got {len(a)} and {len(b)}")
    if diffs.size == 0 or not np.any(diffs):
        return 1.0
    observed = abs(diffs.mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(num_samples, diffs.size))  # (samples, num_queries)
    sampled = np.abs((signs * diffs).mean(axis=1))  # (samples,)
    # tolerance so floating-point noise does not split ties between identical statistics
    extreme = int(np.count_nonzero(sampled >= observed - 1e-12))
    return (extreme + 1) / (num_samples + 1)


def percentiles(values_ms: Sequence[float]) -> dict[str, float]:
    """p50, p95 and mean of a list of timings, rounded to microseconds; zeros for an empty list."""
    data = np.asarray(values_ms, dtype=np.float64)  # (num_values,)
    if data.size == 0:
        return {"p50": 0.0, "p95": 0.0, "mean": 0.0}
    return {"p50": round(float(np.percentile(data, 50)), 3), "p95": round(float(np.percentile(data, 95)), 3),
            "mean": round(float(data.mean()), 3)}


def paired_difference_ci(
    a: Sequence[float], b: Sequence[float], *, num_samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(b - a), resampling queries with their pair kept together."""
    if len(a) != len(b):
        raise ValueError(f"paired interval needs equal-length inputs, got {len(a)} and {len(b)}")
    diffs = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)  # (num_queries,)
    return bootstrap_ci(diffs.tolist(), num_samples=num_samples, confidence=confidence, seed=seed)
