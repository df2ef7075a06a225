"""The load benchmark's records and arithmetic: per-operation latency percentiles, throughput, errors by
status, the ratios and targets, JSON and a Markdown table. Pure: the driver (bench/load.py) feeds it samples.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SEARCH_P99_TARGET_MS = 250.0
SEARCH_RATIO_TARGET = 0.7
"""Search throughput under ingest must be at least this share of search-only throughput."""


@dataclass(frozen=True, slots=True)
class Sample:
    op: str
    latency_ms: float
    outcome: str
    """"ok", or the HTTP status of a refusal ("429"), "no hits" for a search answered with none, or the transport
    error's class name."""
    server_ms: float | None = None
    """The route's own time for the operation as its answer reports it (a search's `timings_ms.total_ms`, an
    ingest's `took_ms`): what the client waited beyond it went to HTTP, the event loop and thread hand-offs."""
    embed_ms: float | None = None
    """Of that, a search's query embedding (`timings_ms.embed_ms`): the wait for a model lane and the pass."""


@dataclass(frozen=True, slots=True)
class OpStats:
    count: int
    ok: int
    throughput_per_s: float
    """Successful operations per second of the phase."""
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int] = field(default_factory=dict)
    parts: dict[str, dict[str, float]] = field(default_factory=dict)
    """Where successful operations' time went, when their answers say: p50 / p99 of the server's own time
    ("server"), of a search's embedding within it ("embed"), and of the client's latency less the server's time
    ("outside"), each over the operations that reported it. Percentiles of parts do not add up to the total's."""


@dataclass(frozen=True, slots=True)
class PhaseStats:
    name: str
    duration_s: float
    ops: dict[str, OpStats]
    server_cpu_s: float | None = None
    """CPU seconds (user + system) the server process used during the phase, when the benchmark started it.
    Unlike throughput, CPU per operation hardly moves when other work shares the machine."""
    driver_cpu_s: float | None = None
    """CPU seconds the load driver's own process used: on the server's machine it competes for the same cores,
    so with the server's CPU and the idle time it accounts for where the machine's capacity went."""
    idle_cpu_s: float | None = None
    """CPU seconds the whole machine spent idle (all cores, /proc/stat idle + iowait) during the phase."""
    other_cpu_s: float | None = None
    """The machine's CPU seconds used by neither the server nor the driver nor idle nor the host: other
    processes (a test run, another benchmark), which make the phase's throughput no baseline."""
    steal_cpu_s: float | None = None
    """CPU seconds a virtual machine's host took from this one during the phase (/proc/stat steal): capacity
    the phase wanted and did not get, which like other processes makes its throughput no baseline."""

    @property
    def errors(self) -> int:
        return sum(sum(s.errors.values()) for s in self.ops.values())

    @property
    def server_cpu_ms_per_op(self) -> float | None:
        done = sum(s.ok for s in self.ops.values())
        return None if self.server_cpu_s is None or not done else round(1000 * self.server_cpu_s / done, 2)

    @property
    def driver_cpu_ms_per_op(self) -> float | None:
        done = sum(s.ok for s in self.ops.values())
        return None if self.driver_cpu_s is None or not done else round(1000 * self.driver_cpu_s / done, 2)

    def cores(self, cpu_s: float | None) -> float | None:
        """`cpu_s` over the phase's wall time: how many cores it kept busy on average."""
        return None if cpu_s is None or self.duration_s <= 0 else round(cpu_s / self.duration_s, 2)


def phase_stats(name: str, samples: list[Sample], duration_s: float, *, server_cpu_s: float | None = None,
                driver_cpu_s: float | None = None, idle_cpu_s: float | None = None,
                other_cpu_s: float | None = None, steal_cpu_s: float | None = None) -> PhaseStats:
    by_op: dict[str, list[Sample]] = {}
    for s in samples:
        by_op.setdefault(s.op, []).append(s)
    ops = {op: _op_stats(rows, duration_s) for op, rows in sorted(by_op.items())}
    return PhaseStats(name, round(duration_s, 3), ops, _rounded(server_cpu_s), _rounded(driver_cpu_s),
                      _rounded(idle_cpu_s), _rounded(other_cpu_s), _rounded(steal_cpu_s))


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _op_stats(rows: list[Sample], duration_s: float) -> OpStats:
    ok = [r.latency_ms for r in rows if r.outcome == "ok"]
    latencies = np.asarray(ok if ok else [0.0])
    errors = Counter(r.outcome for r in rows if r.outcome != "ok")
    return OpStats(count=len(rows), ok=len(ok), throughput_per_s=round(len(ok) / duration_s, 2),
                   p50_ms=round(float(np.percentile(latencies, 50)), 2),
                   p99_ms=round(float(np.percentile(latencies, 99)), 2),
                   max_ms=round(float(latencies.max()), 2), errors=dict(sorted(errors.items())),
                   parts=_parts([r for r in rows if r.outcome == "ok"]))


def _parts(done: list[Sample]) -> dict[str, dict[str, float]]:
    timed = [(r, r.server_ms) for r in done if r.server_ms is not None]
    values: dict[str, list[float]] = {"server": [server for _, server in timed],
                                      "embed": [r.embed_ms for r, _ in timed if r.embed_ms is not None],
                                      "outside": [r.latency_ms - server for r, server in timed]}
    return {name: {"p50_ms": round(float(np.percentile(v, 50)), 2), "p99_ms": round(float(np.percentile(v, 99)), 2)}
            for name, v in values.items() if v}


@dataclass(frozen=True, slots=True)
class Verification:
    acknowledged: int
    """Documents the server answered 201 for (and that were not deleted afterwards by the benchmark)."""
    lost: int
    """Of those, how many GET /documents/{id} did not find after the run."""
    index_checked: int
    index_missing: int
    """Of a sample of acknowledged documents, how many a search by their own text (filtered to them) missed."""


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    met: bool
    value: float


@dataclass(frozen=True, slots=True)
class LoadResult:
    config: dict[str, Any]
    provenance: dict[str, str]
    phases: list[PhaseStats]
    verification: Verification
    search_throughput_ratio: float | None
    targets: list[Target]

    def to_json(self) -> dict[str, Any]:
        return {
            **self.provenance, "config": self.config,
            "phases": {p.name: {"duration_s": p.duration_s, "errors": p.errors, "server_cpu_s": p.server_cpu_s,
                                "server_cpu_ms_per_op": p.server_cpu_ms_per_op, "driver_cpu_s": p.driver_cpu_s,
                                "driver_cpu_ms_per_op": p.driver_cpu_ms_per_op, "idle_cpu_s": p.idle_cpu_s,
                                "other_cpu_s": p.other_cpu_s, "steal_cpu_s": p.steal_cpu_s,
                                "cores": {"server": p.cores(p.server_cpu_s), "driver": p.cores(p.driver_cpu_s),
                                          "idle": p.cores(p.idle_cpu_s), "other": p.cores(p.other_cpu_s),
                                          "steal": p.cores(p.steal_cpu_s)},
                                "ops": {op: asdict(s) for op, s in p.ops.items()}} for p in self.phases},
            "search_throughput_ratio": self.search_throughput_ratio,
            "ingest_cpu_in_searches": ingest_cpu_in_searches(self.phases),
            "ingest_cpu_in_searches_allowed": ingest_cpu_allowed(self.phases),
            "verification": asdict(self.verification), "targets": [asdict(t) for t in self.targets],
        }


def targets(phases: list[PhaseStats], verification: Verification, ratio: float | None) -> list[Target]:
    mixed = phases[-1]
    search = mixed.ops.get("search")
    out = [Target("0 errors in every phase", all(p.errors == 0 for p in phases), sum(p.errors for p in phases)),
           Target("0 acknowledged documents lost", verification.lost == 0 and verification.index_missing == 0,
                  verification.lost + verification.index_missing)]
    if search is not None:
        out.append(Target(f"search p99 <= {SEARCH_P99_TARGET_MS:.0f} ms under the mix",
                          search.p99_ms <= SEARCH_P99_TARGET_MS, search.p99_ms))
    if ratio is not None:
        out.append(Target(f"search throughput under the mix >= {SEARCH_RATIO_TARGET}x search-only",
                          ratio >= SEARCH_RATIO_TARGET, ratio))
    return out


def search_ratio(phases: list[PhaseStats]) -> float | None:
    """Search throughput of the last (mixed) phase over the first (search-only) phase's, when both ran."""
    if len(phases) < 2 or "search" not in phases[0].ops or "search" not in phases[-1].ops:
        return None
    base = phases[0].ops["search"].throughput_per_s
    return round(phases[-1].ops["search"].throughput_per_s / base, 3) if base else None


def ingest_cpu_in_searches(phases: list[PhaseStats]) -> float | None:
    """Server CPU of one ingest in units of one search's, from the two phases: the mixed phase's CPU less its
    searches at the search-only phase's CPU per search, per ingest. The ratio target holds when this is at most
    `ingest_cpu_allowed` (1.71 for an 80/20 mix on equal cores)."""
    if len(phases) < 2:
        return None
    only_cpu, mixed_cpu = phases[0].server_cpu_s, phases[-1].server_cpu_s
    only, ingest, search = phases[0].ops.get("search"), phases[-1].ops.get("ingest"), phases[-1].ops.get("search")
    if only_cpu is None or mixed_cpu is None or only is None or not only.ok or ingest is None or not ingest.ok:
        return None
    per_search = only_cpu / only.ok
    searches = search.ok if search is not None else 0
    return round((mixed_cpu - searches * per_search) / ingest.ok / per_search, 2)


def ingest_cpu_allowed(phases: list[PhaseStats], target: float = SEARCH_RATIO_TARGET) -> float | None:
    """The most one ingest may cost in searches of CPU (`ingest_cpu_in_searches`) for the mix's search
    throughput to reach `target` x search-only's, at the server cores each phase kept busy and the ingests per
    search the mix ran: each search of the mix carries q = ingests / searches ingests, so with C cores busy
    (search-only C0) it reaches C / (c_s (1 + q x)) searches a second against C0 / c_s, and x may be up to
    (C / (target C0) - 1) / q. An 80/20 mix on equal cores gives (1 / 0.7 - 1) / 0.25 = 1.71; a mix that keeps
    more of the cores busy than searches alone did allows more."""
    if len(phases) < 2:
        return None
    only, mixed = phases[0], phases[-1]
    only_cores, mixed_cores = only.cores(only.server_cpu_s), mixed.cores(mixed.server_cpu_s)
    ingest, search = mixed.ops.get("ingest"), mixed.ops.get("search")
    if not only_cores or mixed_cores is None or ingest is None or not ingest.ok or search is None or not search.ok:
        return None
    return round((mixed_cores / (target * only_cores) - 1) / (ingest.ok / search.ok), 2)


def to_markdown(result: LoadResult) -> str:
    c = result.config
    warm = f" after {c['warmup_s']:g} s of uncounted warm-up" if c.get("warmup_s") else ""
    sliced = f" in {c['rounds']} alternating slices" if c.get("rounds", 1) > 1 and len(result.phases) > 1 else ""
    lines = [f"# Load: {c['clients']} clients, {c['duration_s']:.0f} s a phase{sliced}{warm}, mix {c['mix']}", "",
             f"git {result.provenance.get('git_sha')}, CPU {result.provenance.get('cpu')} "
             f"({result.provenance.get('cpu_isa') or 'flags not recorded'})"
             + (f"; server: {result.provenance['server_embed_lanes']} embedding lane(s) on "
                f"{result.provenance.get('server_cores')} cores" if "server_embed_lanes" in result.provenance else ""),
             "",
             "| phase | op | ok | ops/s | p50 ms | p99 ms | max ms | errors |", "|---|---|---|---|---|---|---|---|"]
    for p in result.phases:
        for op, s in p.ops.items():
            lines.append(f"| {p.name} | {op} | {s.ok} | {s.throughput_per_s} | {s.p50_ms} | {s.p99_ms} | "
                         f"{s.max_ms} | {s.errors or 0} |")
    parts = [_parts_line(p.name, op, s) for p in result.phases for op, s in p.ops.items() if s.parts]
    if parts:
        lines += ["", "Where the time went (p50 / p99 ms; the server's own time as its answers report it, the "
                      "rest outside it: HTTP, the event loop, thread hand-offs):", "", *parts]
    cpu = [f"{p.name} {p.server_cpu_ms_per_op} ms" for p in result.phases if p.server_cpu_ms_per_op is not None]
    if cpu:
        busy = [f"{p.name}: server {p.cores(p.server_cpu_s)}, driver {p.cores(p.driver_cpu_s)} "
                f"({p.driver_cpu_ms_per_op} ms an op), idle {p.cores(p.idle_cpu_s)}, other processes "
                f"{p.cores(p.other_cpu_s)}" + (f", taken by the host (steal) {p.cores(p.steal_cpu_s)}"
                                              if p.steal_cpu_s else "") for p in result.phases]
        lines += ["", f"Cores in use (CPU seconds / wall seconds): {'; '.join(busy)}."]
        cost, allowed = ingest_cpu_in_searches(result.phases), ingest_cpu_allowed(result.phases)
        lines += ["", f"Server CPU per operation: {', '.join(cpu)}" + (
            f"; one ingest costs {cost} searches of CPU (the ratio target needs <= {allowed} at the cores these "
            "phases kept busy and the mix they ran; <= 1.71 for 80/20 on equal cores)." if cost is not None
            else " (what one ingest costs in searches needs a search-only phase and a mix with both).")]
    v = result.verification
    lines += ["", f"Acknowledged documents: {v.acknowledged}, lost: {v.lost}; index check: {v.index_missing} "
                  f"missing of {v.index_checked} sampled.",
              "Search throughput under the mix / search-only: " + (
                  "n/a (no search-only phase)" if result.search_throughput_ratio is None
                  else f"{result.search_throughput_ratio}"), "",
              "| target | met | value |", "|---|---|---|"]
    lines += [f"| {t.name} | {'yes' if t.met else 'NO'} | {t.value} |" for t in result.targets]
    return "\n".join(lines) + "\n"


def _parts_line(phase: str, op: str, stats: OpStats) -> str:
    def pair(name: str) -> str:
        part = stats.parts[name]
        return f"{part['p50_ms']:g} / {part['p99_ms']:g}"

    embed = f" (embedding {pair('embed')})" if "embed" in stats.parts else ""
    return (f"- {phase} {op}: at the client {stats.p50_ms:g} / {stats.p99_ms:g}, in the server {pair('server')}"
            f"{embed}, outside it {pair('outside')}")
