"""`ragsvc bench route-cost`: the server CPU one request of each kind costs, and what that leaves for the load
benchmark's search-throughput ratio.

`bench load` gives one ingest's cost in searches from the difference between its two phases. This splits it:
N clients send one kind of request for T seconds, one kind after another, and the server's CPU seconds over
the requests it answered give its cost. The kinds pair up so that a difference isolates one stage:

- `vector_search`: a search by a vector of the collection's width, everything of a search but the embedding
  (HTTP, validation, the index, the hits' rows, the answer);
- `search`: a search by text, each one a text no other search sent (as `bench load`'s);
- `unchanged_ingest`: each client re-sends a document the collection already holds, which the server skips by
  its content hash: an ingest's HTTP, validation and duplicate check, without embedding or writing;
- `ingest`: a new one-document ingest (`bench load`'s document), embedded and committed.

So `search - vector_search` is what a query's embedding costs under load and `ingest - unchanged_ingest` what a
document's embedding and its durable write cost. Each kind runs alone, so passes and group commits batch
only requests of that kind: the figures are a split of costs, not a substitute for the mixed run.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ragsvc.bench.http_client import HttpClientError, RawConnection
from ragsvc.bench.load import ingest_document, process_cpu_s, search_text
from ragsvc.bench.provenance import cpu_isa, cpu_model, package_git_sha
from ragsvc.bench.server_process import serve_process

KINDS = ("vector_search", "search", "unchanged_ingest", "ingest")


@dataclass(frozen=True)
class RouteCostConfig:
    clients: int = 32
    duration_s: float = 15.0
    """Seconds each kind runs."""
    collection: str = "sample"
    k: int = 5
    seed: int = 0
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= self.clients <= 1024:
            raise ValueError(f"clients must be in 1..1024, got {self.clients}")
        if not 0 < self.duration_s <= 3600:
            raise ValueError(f"duration_s must be in (0, 3600], got {self.duration_s}")
        if not 1 <= self.k <= 1000:
            raise ValueError(f"k must be in 1..1000, got {self.k}")


@dataclass(frozen=True)
class RouteCost:
    kind: str
    ok: int
    errors: int
    elapsed_s: float
    server_cpu_s: float

    @property
    def per_s(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def cpu_ms_per_op(self) -> float | None:
        """Server CPU milliseconds per answered request (None when none was answered)."""
        return self.server_cpu_s * 1000.0 / self.ok if self.ok else None

    @property
    def cores(self) -> float:
        return self.server_cpu_s / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class Split:
    """Differences between kinds, in server CPU ms a request (None when a kind is missing)."""

    query_embedding_ms: float | None
    """search - vector_search."""
    document_embed_and_write_ms: float | None
    """ingest - unchanged_ingest."""
    ingest_in_searches: float | None
    """ingest / search."""


def split(costs: dict[str, RouteCost]) -> Split:
    def ms(kind: str) -> float | None:
        cost = costs.get(kind)
        return None if cost is None else cost.cpu_ms_per_op

    def diff(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(a - b, 3)

    search, ingest = ms("search"), ms("ingest")
    return Split(query_embedding_ms=diff(search, ms("vector_search")),
                 document_embed_and_write_ms=diff(ingest, ms("unchanged_ingest")),
                 ingest_in_searches=None if search is None or ingest is None else round(ingest / search, 2))


@dataclass
class RouteCostResult:
    config: dict[str, Any]
    provenance: dict[str, str]
    costs: dict[str, RouteCost]

    def to_json(self) -> dict[str, Any]:
        return {**self.provenance, "config": self.config,
                "kinds": {k: {"ok": c.ok, "errors": c.errors, "per_s": round(c.per_s, 1),
                              "server_cpu_ms_per_op": None if c.cpu_ms_per_op is None else round(c.cpu_ms_per_op, 3),
                              "server_cores": round(c.cores, 2)} for k, c in self.costs.items()},
                "split": asdict(split(self.costs))}


def to_markdown(result: RouteCostResult) -> str:
    config = result.config
    lines = [f"# Server CPU by request kind: {config['clients']} clients, {config['duration_s']} s a kind", "",
             f"git {result.provenance['git_sha']}, CPU {result.provenance['cpu']} ({result.provenance['cpu_isa']})",
             "", "| kind | ok | /s | server CPU ms an op | server cores | errors |", "|---|---|---|---|---|---|"]
    for kind, c in result.costs.items():
        per_op = "-" if c.cpu_ms_per_op is None else f"{c.cpu_ms_per_op:.2f}"
        lines.append(f"| {kind} | {c.ok} | {c.per_s:.1f} | {per_op} | {c.cores:.2f} | {c.errors} |")
    s = split(result.costs)
    lines += ["", f"- a query's embedding (search - vector_search): {s.query_embedding_ms} ms",
              f"- a document's embedding and write (ingest - unchanged_ingest): {s.document_embed_and_write_ms} ms",
              f"- one ingest in searches (ingest / search): {s.ingest_in_searches}"]
    return "\n".join(lines) + "\n"


class _Requests:
    """The request each kind sends next, per client: deterministic from the seed."""

    def __init__(self, config: RouteCostConfig, dim: int) -> None:
        self.config = config
        self.base = f"/v1/collections/{config.collection}"
        rng = random.Random(config.seed)
        raw = [rng.gauss(0.0, 1.0) for _ in range(dim)]
        norm = sum(x * x for x in raw) ** 0.5 or 1.0
        self.vector = [x / norm for x in raw]
        self.stored = [ingest_document(f"route-cost-stored-{i}", rng) for i in range(config.clients)]
        self.rngs = [random.Random(config.seed * 1_000_003 + i) for i in range(config.clients)]
        self.counter = 0

    def next(self, kind: str, client: int) -> tuple[str, str, dict[str, Any], int]:
        """(method, path, body, the status that means done)."""
        self.counter += 1
        rng = self.rngs[client]
        if kind == "vector_search":
            return "POST", f"{self.base}/search", {"vector": self.vector, "k": self.config.k}, 200
        if kind == "search":
            return "POST", f"{self.base}/search", {"query": search_text(rng, client, self.counter),
                                                   "k": self.config.k}, 200
        if kind == "unchanged_ingest":
            return "POST", f"{self.base}/documents", {"documents": [self.stored[client]]}, 201
        if kind == "ingest":
            doc = ingest_document(f"route-cost-{client}-{self.counter}", rng)
            return "POST", f"{self.base}/documents", {"documents": [doc]}, 201
        raise ValueError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")


async def _prepare(url: str, config: RouteCostConfig) -> _Requests:
    """The collection's width, and each client's stored document in place (the unchanged ingests' target)."""
    http = RawConnection(url, timeout_s=config.timeout_s)
    try:
        r = await http.request("GET", f"/v1/collections/{config.collection}")
        if r.status_code != 200:
            raise RuntimeError(f"collection {config.collection!r}: the server answered {r.status_code}: "
                               f"{r.body[:200]!r}; create it first or use another --collection")
        requests = _Requests(config, int(r.json()["dim"]))
        r = await http.request("POST", f"{requests.base}/documents", {"documents": requests.stored})
        if r.status_code != 201:
            raise RuntimeError(f"storing the unchanged ingests' documents: {r.status_code}: {r.body[:200]!r}")
        return requests
    finally:
        await http.close()


async def _run_kind(url: str, config: RouteCostConfig, requests: _Requests, kind: str, server_pid: int) -> RouteCost:
    connections = [RawConnection(url, timeout_s=config.timeout_s) for _ in range(config.clients)]
    ok = errors = 0

    async def client(index: int, deadline: float) -> None:
        nonlocal ok, errors
        while time.monotonic() < deadline:
            method, path, body, expected = requests.next(kind, index)
            try:
                r = await connections[index].request(method, path, body)
            except HttpClientError:
                errors += 1
                continue
            if r.status_code == expected:
                ok += 1
            else:
                errors += 1

    try:
        cpu_before, started = process_cpu_s(server_pid), time.monotonic()
        await asyncio.gather(*(client(i, started + config.duration_s) for i in range(config.clients)))
        elapsed, cpu = time.monotonic() - started, process_cpu_s(server_pid) - cpu_before
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    return RouteCost(kind, ok, errors, elapsed, cpu)


async def drive(url: str, server_pid: int, config: RouteCostConfig, *,
                on_kind: Callable[[str], None] | None = None) -> RouteCostResult:
    """Each kind in turn against the server at `url`, whose process (`server_pid`, on this machine) is read for
    its CPU seconds."""
    sha = package_git_sha()
    requests = await _prepare(url, config)
    costs = {}
    for kind in KINDS:
        if on_kind:
            on_kind(kind)
        costs[kind] = await _run_kind(url, config, requests, kind, server_pid)
    provenance = {"git_sha": sha, "cpu": cpu_model(), "cpu_isa": " ".join(cpu_isa())}
    return RouteCostResult(config=asdict(config), provenance=provenance, costs=costs)


def run_route_cost(config: RouteCostConfig, data_dir: Path, *,
                   on_kind: Callable[[str], None] | None = None) -> RouteCostResult:
    """Start `ragsvc serve --sample` on `data_dir` (a fresh folder) and measure it. Only a server started here:
    its CPU is read from /proc."""
    with serve_process(data_dir, sample=True) as child:
        return asyncio.run(drive(child.url, child.pid, config, on_kind=on_kind))
