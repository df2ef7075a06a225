"""Typed records of an eval run: what the runner produces and the report, compare and CLI read.

One JSON form, at the file edge: `to_json` writes exactly the shape `eval/results/*.json` and the committed
baselines have, and `from_json` reads it back with an `InvalidInput` that names the file and the config.

    {"suite", "dataset", "configs": [ConfigResult...], "git_sha", "created_at", "embedder", "llm",
     "num_queries", "num_documents", "ingest_s", "query_embed_ms": {"mean_batched"}, "baseline",
     "references", "answer"}

A config's metrics are stored as three maps keyed by metric (`metrics`, `metrics_ci`, `per_query`); in memory
each metric is one `MetricSummary`, so a mean is never separated from the per-query scores a paired test needs.
Two parts stay plain JSON objects because their producers own their shape: a config's `params` (the config
kind's `to_dict`) and `stages` (the retriever's `stage_report`), and the run's `answer` section (the answer
strategies).

Keys a file did not have are not invented on the way back: a config's optional key is omitted when its field
is None, and a run remembers which of its optional top-level keys were absent (files from before a key
existed), so reading and writing a results file gives the same document.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ragsvc.errors import InvalidInput

REQUIRED_CONFIG_KEYS = ("name", "metrics", "latency_ms", "build_s", "index_bytes")
RUN_KEYS = ("suite", "dataset", "configs", "git_sha", "created_at", "embedder", "embed_path", "llm", "num_queries",
            "num_documents", "ingest_s", "query_embed_ms", "baseline", "references", "answer")
"""Top-level keys in the order the runner writes them."""
OPTIONAL_RUN_KEYS = frozenset(RUN_KEYS[3:])


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Per-query wall time percentiles in milliseconds."""

    p50: float
    p95: float
    mean: float | None = None

    @classmethod
    def from_json(cls, data: Any, *, where: str) -> LatencySummary:
        if not isinstance(data, Mapping) or not {"p50", "p95"} <= set(data):
            raise InvalidInput(f"{where}: latency_ms needs p50 and p95 (milliseconds)")
        return cls(data["p50"], data["p95"], data.get("mean"))

    def to_json(self) -> dict[str, float]:
        out = {"p50": self.p50, "p95": self.p95}
        return out if self.mean is None else {**out, "mean": self.mean}


@dataclass(frozen=True, slots=True)
class MetricSummary:
    """One metric of one config: the mean over queries, its bootstrap interval, and every query's score."""

    mean: float
    ci: tuple[float, float] | None = None
    """95% percentile-bootstrap interval of the mean; None in files written without one."""
    per_query: Mapping[str, float] | None = None
    """query id -> score; what paired tests between configs and runs compare. None in older files."""


@dataclass(frozen=True, slots=True)
class ConfigResult:
    """One config's evaluation. Optional fields are None when the run had nothing to record (and the key is
    then left out of the JSON)."""

    name: str
    metrics: Mapping[str, MetricSummary]
    """In the suite's metric order."""
    latency_ms: LatencySummary
    build_s: float
    index_bytes: int
    kind: str | None = None
    params: Mapping[str, Any] | None = None
    """The config as parsed (its kind's `to_dict`), free-form per kind."""
    prefetch_s: float | None = None
    """Work done for all queries before searching (HyDE passages); None when the config does none."""
    num_queries: int | None = None
    served_by: Mapping[str, int] | None = None
    """How many queries each index structure answered, by the structure's one-line form."""
    stages: Mapping[str, Any] | None = None
    """What the pipeline's stages did (per-stage latency, HyDE and rerank details); None for plain indexes."""

    def means(self) -> dict[str, float]:
        return {metric: summary.mean for metric, summary in self.metrics.items()}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.kind is not None:
            out["kind"] = self.kind
        if self.params is not None:
            out["params"] = dict(self.params)
        out["metrics"] = self.means()
        if any(s.ci is not None for s in self.metrics.values()):
            out["metrics_ci"] = {m: list(s.ci) for m, s in self.metrics.items() if s.ci is not None}
        out |= {"latency_ms": self.latency_ms.to_json(), "build_s": self.build_s}
        if self.prefetch_s is not None:
            out["prefetch_s"] = self.prefetch_s
        out["index_bytes"] = self.index_bytes
        optional = {"num_queries": self.num_queries, "served_by": self.served_by, "stages": self.stages}
        out |= {k: dict(v) if isinstance(v, Mapping) else v for k, v in optional.items() if v is not None}
        if any(s.per_query is not None for s in self.metrics.values()):
            out["per_query"] = {m: dict(s.per_query) for m, s in self.metrics.items() if s.per_query is not None}
        return out

    @classmethod
    def from_json(cls, data: Any, *, where: str) -> ConfigResult:
        missing = [k for k in REQUIRED_CONFIG_KEYS if not isinstance(data, Mapping) or k not in data]
        if missing:
            raise InvalidInput(f"{where} lacks {', '.join(missing)}; was it written by ragsvc eval?")
        means, cis, per_query = (_mapping(data.get(k, {}), f"{where}.{k}") for k in
                                 ("metrics", "metrics_ci", "per_query"))
        metrics = {m: MetricSummary(mean, _pair(cis.get(m), f"{where}.metrics_ci.{m}"), per_query.get(m))
                   for m, mean in means.items()}
        return cls(name=data["name"], metrics=metrics,
                   latency_ms=LatencySummary.from_json(data["latency_ms"], where=f"{where}.latency_ms"),
                   build_s=data["build_s"], index_bytes=data["index_bytes"], kind=data.get("kind"),
                   params=data.get("params"), prefetch_s=data.get("prefetch_s"),
                   num_queries=data.get("num_queries"), served_by=data.get("served_by"), stages=data.get("stages"))


@dataclass(frozen=True, slots=True)
class RunResult:
    """A whole suite run: every config's result plus what the run used (data, models, code version)."""

    suite: str
    dataset: str
    configs: tuple[ConfigResult, ...]
    git_sha: str | None = None
    created_at: str | None = None
    """UTC, ISO 8601 to the second."""
    embedder: str | None = None
    embed_path: str | None = None
    """How the embedder computed its vectors (precision, backend, and why), which its id does not say."""
    llm: str | None = None
    """The run's language model (HyDE, LLM rerank, answer strategies); None when it had none."""
    num_queries: int | None = None
    num_documents: int | None = None
    ingest_s: float | None = None
    """Embedding the corpus into the warm-up collection (fast when its vectors were cached)."""
    query_embed_ms: float | None = None
    """Mean batched cost of embedding one query (not part of any config's latency)."""
    baseline: str | None = None
    """The config the report's deltas are taken against."""
    references: Mapping[str, float] = field(default_factory=dict)
    """Published figures for comparison, label -> primary metric."""
    answer: Mapping[str, Any] | None = None
    """The answer stage's section (judged answers or answer strategies, or why it was skipped)."""
    absent: frozenset[str] = frozenset()
    """Optional top-level keys the file this was read from did not have; they are not written back."""

    def config(self, name: str | None) -> ConfigResult | None:
        return next((c for c in self.configs if c.name == name), None)

    def to_json(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "suite": self.suite, "dataset": self.dataset, "configs": [c.to_json() for c in self.configs],
            "git_sha": self.git_sha, "created_at": self.created_at, "embedder": self.embedder,
            "embed_path": self.embed_path, "llm": self.llm,
            "num_queries": self.num_queries, "num_documents": self.num_documents, "ingest_s": self.ingest_s,
            "query_embed_ms": None if self.query_embed_ms is None else {"mean_batched": self.query_embed_ms},
            "baseline": self.baseline, "references": dict(self.references),
            "answer": None if self.answer is None else dict(self.answer),
        }
        return {k: v for k, v in values.items() if k not in self.absent}

    @classmethod
    def from_json(cls, data: Any, *, source: str) -> RunResult:
        """`source` (the file name) starts every error message."""
        if not isinstance(data, Mapping) or not isinstance(data.get("configs"), list):
            raise InvalidInput(f"{source}: not an eval results file (needs a 'configs' list)")
        configs = tuple(ConfigResult.from_json(c, where=f"{source}: configs[{i}]")
                        for i, c in enumerate(data["configs"]))
        embed_ms = data.get("query_embed_ms")
        return cls(
            suite=data.get("suite", ""), dataset=data.get("dataset", ""), configs=configs,
            git_sha=data.get("git_sha"), created_at=data.get("created_at"), embedder=data.get("embedder"),
            llm=data.get("llm"), num_queries=data.get("num_queries"), num_documents=data.get("num_documents"),
            ingest_s=data.get("ingest_s"),
            query_embed_ms=embed_ms.get("mean_batched") if isinstance(embed_ms, Mapping) else None,
            baseline=data.get("baseline"), references=_mapping(data.get("references") or {}, f"{source}: references"),
            answer=data.get("answer"), embed_path=data.get("embed_path"),
            absent=frozenset(k for k in OPTIONAL_RUN_KEYS if k not in data),
        )


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _pair(value: Any, where: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise InvalidInput(f"{where}: expected [low, high]")
    return value[0], value[1]
