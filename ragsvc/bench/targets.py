"""The targets `ragsvc bench search` checks its rows against: ratios to the best raw-hnswlib point, pass/fail.

The reference is the fastest raw hnswlib point (ef sweep) whose recall@10 is at least 0.95; every row gets its
QPS and bytes relative to it, so "1.2x the QPS at 0.3x the memory" reads straight from the JSON.
"""

from __future__ import annotations

from ragsvc.bench.search_records import HttpComparison, ReferencePoint, SearchRow, Skipped, Target

RECALL_FLOOR = 0.95
SHARD_RECALL_TOLERANCE = 0.005
"""4 shards may lose at most 0.5 recall points against 1 shard."""
ADAPTIVE_MIN_QPS_RATIO = 1.0
ADAPTIVE_MAX_BYTES_RATIO = 1 / 3
HTTP_MIN_RATIO = 0.5


def best_at_recall(rows: list[SearchRow], floor: float = RECALL_FLOOR) -> SearchRow | None:
    """The fastest row whose recall reaches `floor`, or None."""
    good = [r for r in rows if r.recall_at_10 >= floor]
    return max(good, key=lambda r: r.qps) if good else None


def with_ratios(rows: list[SearchRow], peers: list[SearchRow]
                ) -> tuple[ReferencePoint | None, list[SearchRow], list[SearchRow]]:
    """(reference hnswlib point, rows and peers each with qps_vs_hnswlib and bytes_vs_hnswlib added)."""
    best = best_at_recall([p for p in peers if p.name.startswith("hnswlib")])
    if best is None:
        return None, rows, peers
    reference = ReferencePoint.of(best)
    return reference, [r.with_ratios(reference) for r in rows], [p.with_ratios(reference) for p in peers]


def _adaptive_target(rows: list[SearchRow], reference: ReferencePoint | None) -> Target:
    name = "adaptive >= 1.0x hnswlib QPS at <= 1/3 memory, recall@10 >= 0.95"
    adaptive = [r for r in rows if r.name.startswith("adaptive") and "shards" not in r.name]
    if reference is None or not adaptive:
        why = "no hnswlib point reached recall 0.95" if reference is None else "no adaptive config was run"
        return Target(name, False, why)
    small = [r for r in adaptive if r.index_bytes <= ADAPTIVE_MAX_BYTES_RATIO * reference.index_bytes]
    best = best_at_recall(small) or best_at_recall(adaptive) or max(adaptive, key=lambda r: r.recall_at_10)
    passed = (best.recall_at_10 >= RECALL_FLOOR and best.qps >= ADAPTIVE_MIN_QPS_RATIO * reference.qps
              and best.index_bytes <= ADAPTIVE_MAX_BYTES_RATIO * reference.index_bytes)
    detail = (f"best adaptive point {best.name}: recall {best.recall_at_10:.4f}, "
              f"{best.qps / reference.qps:.2f}x QPS, {best.index_bytes / reference.index_bytes:.3f}x "
              f"bytes of {reference.name} (recall {reference.recall_at_10:.4f}, {reference.qps:.0f} QPS)")
    return Target(name, bool(passed), detail, point=best.name)


def _shard_targets(rows: list[SearchRow]) -> list[Target]:
    """Compare each `<config>-4shards...` point with the same point of `<config>`."""
    by_name = {r.name: r for r in rows}
    out = []
    for row in rows:
        if "-4shards" not in row.name:
            continue
        single = by_name.get(row.name.replace("-4shards", ""))
        if single is None:
            continue
        drop = single.recall_at_10 - row.recall_at_10
        out.append(Target(f"4 shards within 0.5 pt of 1 shard ({row.name})",
                          bool(drop <= SHARD_RECALL_TOLERANCE + 1e-12),
                          f"1 shard {single.recall_at_10:.4f}, 4 shards {row.recall_at_10:.4f}, "
                          f"drop {100 * drop:+.2f} pt"))
    return out


def _http_target(http: HttpComparison | Skipped) -> Target:
    name = "HTTP >= 0.5x in-process QPS"
    if isinstance(http, Skipped):
        return Target(name, False, f"not measured: {http.reason or 'skipped'}")
    ratio = http.http_over_in_process
    return Target(name, bool(ratio >= HTTP_MIN_RATIO),
                  f"HTTP {http.http.measurement.qps:.0f} QPS vs in-process {http.in_process.measurement.qps:.0f} QPS "
                  f"= {ratio:.2f}x on {http.num_vectors} vectors")


def evaluate_targets(rows: list[SearchRow], reference: ReferencePoint | None,
                     http: HttpComparison | Skipped) -> list[Target]:
    return [_adaptive_target(rows, reference), *_shard_targets(rows), _http_target(http)]
