"""Typed records of `ragsvc bench search`: measured rows, the HTTP comparison, targets and the whole result.

Peers, configs, the HTTP measurement and the targets are computed in different modules; these records are what
passes between them and to the CLI. `to_json` writes the benchmark's JSON (unchanged in shape: a row's optional
keys are left out when None, in the order the rows always had) and `from_json` reads one back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ragsvc.bench.timing import Measurement

MEASUREMENT_KEYS = ("recall_at_10", "qps", "mean_latency_ms", "p99_latency_ms", "qps_all_passes")


def _measurement(data: Mapping[str, Any]) -> Measurement:
    return Measurement(**{k: data[k] for k in MEASUREMENT_KEYS})


@dataclass(frozen=True, slots=True)
class SearchRow:
    """One measured point: a ragsvc config at one search option, or a peer (raw hnswlib, faiss) at one setting."""

    name: str
    measurement: Measurement
    index_bytes: int
    """Every byte held to answer a query (see `ragsvc.bench.search.MEMORY_NOTE`)."""
    params: Mapping[str, Any]
    build_s: float | None = None
    """Peers: building the raw index (0.0 when it was loaded from the cache)."""
    open_or_build_s: float | None = None
    """ragsvc configs: building the index, or reopening the one a previous run saved."""
    served_by: str | None = None
    """ragsvc configs: the one-line form of the structure that answered."""
    qps_vs_hnswlib: float | None = None
    bytes_vs_hnswlib: float | None = None
    """Ratios to the reference hnswlib point; None until `ragsvc.bench.targets.with_ratios` adds them."""

    @property
    def recall_at_10(self) -> float:
        return self.measurement.recall_at_10

    @property
    def qps(self) -> float:
        return self.measurement.qps

    def with_ratios(self, reference: ReferencePoint) -> SearchRow:
        return dataclasses.replace(self, qps_vs_hnswlib=round(self.qps / reference.qps, 3),
                                   bytes_vs_hnswlib=round(self.index_bytes / reference.index_bytes, 3))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, **self.measurement.fields(), "index_bytes": self.index_bytes}
        optional = {"build_s": self.build_s, "open_or_build_s": self.open_or_build_s, "served_by": self.served_by}
        out |= {k: v for k, v in optional.items() if v is not None}
        out["params"] = dict(self.params)
        ratios = {"qps_vs_hnswlib": self.qps_vs_hnswlib, "bytes_vs_hnswlib": self.bytes_vs_hnswlib}
        return out | {k: v for k, v in ratios.items() if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SearchRow:
        return cls(name=data["name"], measurement=_measurement(data), index_bytes=data["index_bytes"],
                   params=data["params"], build_s=data.get("build_s"), open_or_build_s=data.get("open_or_build_s"),
                   served_by=data.get("served_by"), qps_vs_hnswlib=data.get("qps_vs_hnswlib"),
                   bytes_vs_hnswlib=data.get("bytes_vs_hnswlib"))


@dataclass(frozen=True, slots=True)
class ReferencePoint:
    """The fastest raw hnswlib point at recall@10 >= 0.95: what every row's ratios are taken against."""

    name: str
    recall_at_10: float
    qps: float
    index_bytes: int

    @classmethod
    def of(cls, row: SearchRow) -> ReferencePoint:
        return cls(row.name, row.recall_at_10, row.qps, row.index_bytes)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReferencePoint:
        return cls(data["name"], data["recall_at_10"], data["qps"], data["index_bytes"])


@dataclass(frozen=True, slots=True)
class TimedPoint:
    """A search path measured without an index of its own to size (in-process vs HTTP over one collection)."""

    name: str
    measurement: Measurement
    params: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, **self.measurement.fields()}
        return out if self.params is None else out | {"params": dict(self.params)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TimedPoint:
        return cls(data["name"], _measurement(data), data.get("params"))


@dataclass(frozen=True, slots=True)
class HttpComparison:
    """Search QPS over HTTP (uvicorn on loopback) against in-process, on the same collection and queries."""

    num_vectors: int
    index: Mapping[str, Any]
    ingest_s: float
    in_process: TimedPoint
    http: TimedPoint

    @property
    def http_over_in_process(self) -> float:
        return round(self.http.measurement.qps / self.in_process.measurement.qps, 3)

    def to_json(self) -> dict[str, Any]:
        return {"num_vectors": self.num_vectors, "index": dict(self.index), "ingest_s": self.ingest_s,
                "in_process": self.in_process.to_json(), "http": self.http.to_json(),
                "http_over_in_process": self.http_over_in_process}


@dataclass(frozen=True, slots=True)
class Skipped:
    """A section that was not measured, and why."""

    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"skipped": True, "reason": self.reason}


def http_from_json(data: Mapping[str, Any]) -> HttpComparison | Skipped:
    if data.get("skipped"):
        return Skipped(data.get("reason", ""))
    return HttpComparison(data["num_vectors"], data["index"], data["ingest_s"],
                          TimedPoint.from_json(data["in_process"]), TimedPoint.from_json(data["http"]))


@dataclass(frozen=True, slots=True)
class Target:
    """One pass/fail check of the benchmark's goals, with the numbers behind it."""

    name: str
    passed: bool
    detail: str
    point: str | None = None
    """The row the check judged, when it picked one."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "passed": self.passed, "detail": self.detail}
        return out if self.point is None else out | {"point": self.point}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Target:
        return cls(data["name"], data["passed"], data["detail"], data.get("point"))


@dataclass(frozen=True, slots=True)
class SearchBenchResult:
    """One run of the search benchmark: what ran where, every row, and the targets judged on them."""

    git_sha: str
    created_unix: int
    k: int
    machine: Mapping[str, Any]
    """cpus, platform, threads_per_query, load_average."""
    corpus: Mapping[str, Any]
    """Size, embedding model, content hash and sources of the embedded corpus."""
    memory_note: str
    notes: tuple[str, ...]
    configs: tuple[SearchRow, ...]
    peers: tuple[SearchRow, ...]
    reference_hnswlib: ReferencePoint | None
    gpu: Mapping[str, Any]
    http: HttpComparison | Skipped
    targets: tuple[Target, ...]
    wall_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "search", "git_sha": self.git_sha, "created_unix": self.created_unix, "k": self.k,
            "machine": dict(self.machine), "corpus": dict(self.corpus), "memory_note": self.memory_note,
            "notes": list(self.notes), "configs": [r.to_json() for r in self.configs],
            "peers": [r.to_json() for r in self.peers],
            "reference_hnswlib": None if self.reference_hnswlib is None else self.reference_hnswlib.to_json(),
            "gpu": dict(self.gpu), "http": self.http.to_json(), "targets": [t.to_json() for t in self.targets],
            "wall_s": self.wall_s,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SearchBenchResult:
        reference = data["reference_hnswlib"]
        return cls(
            git_sha=data["git_sha"], created_unix=data["created_unix"], k=data["k"], machine=data["machine"],
            corpus=data["corpus"], memory_note=data["memory_note"], notes=tuple(data["notes"]),
            configs=tuple(SearchRow.from_json(r) for r in data["configs"]),
            peers=tuple(SearchRow.from_json(r) for r in data["peers"]),
            reference_hnswlib=None if reference is None else ReferencePoint.from_json(reference),
            gpu=data["gpu"], http=http_from_json(data["http"]),
            targets=tuple(Target.from_json(t) for t in data["targets"]), wall_s=data["wall_s"],
        )
