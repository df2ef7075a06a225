"""`ragsvc bench load`: N concurrent HTTP clients run a mix of search / ingest / delete / answer against a
real server for T seconds, then every acknowledged document is checked for.

An asyncio driver (one keep-alive connection per client, bench/http_client.py: httpx's async pool would take
as much CPU per request as the server's cheapest routes, on the cores the server is measured on): each client
picks its next operation from the mix with its own seeded generator, so a run's sequence of operations is
reproducible. With `search_only_first` clients also run searches alone for T seconds, the peer that the mixed
phase's search throughput is divided by; the two phases alternate in `rounds` slices, so that a drift in the
machine's speed weighs on both. The server is a `ragsvc serve --sample` child on a fresh data folder (the
sample collection), or any running server given by URL.

Afterwards each document the server acknowledged (201) and the run did not delete is fetched by id
(`lost` counts misses), and a sample of them is searched for by its own text, filtered to its id
(`index_missing`): acknowledged means stored and searchable.

Every search sends a text no other search of the run sent (one of the sample's questions, a word, and the
client's own sequence number), so a cache of query embeddings or of whole results could answer none of them:
the run measures the work of a search, not a cache's hit rate.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from ragsvc.bench.http_client import HttpClientError, RawConnection
from ragsvc.bench.load_report import (
    LoadResult,
    PhaseStats,
    Sample,
    Verification,
    phase_stats,
    search_ratio,
    targets,
)
from ragsvc.bench.provenance import cpu_isa, cpu_model, package_git_sha
from ragsvc.bench.server_process import serve_process
from ragsvc.retrieval.embed_batcher import lanes_for, threads_per_lane

OPERATIONS = ("search", "ingest", "delete", "answer")
QUERIES = (
    "how does paged attention save memory?", "what is continuous batching?", "how does HNSW search a graph?",
    "what does BM25 score?", "how does FLARE decide to retrieve?", "what is product quantization?",
    "why use Matryoshka embeddings?", "what does HyDE generate?", "how do generative agents reflect?",
    "how is RAG evaluated?", "what does duckdb store?", "how does tree-sitter parse code?",
)
WORDS = ("river", "lantern", "granite", "meadow", "copper", "harbor", "violet", "summit", "orchard", "ember",
         "glacier", "thistle", "canyon", "saffron", "willow", "quartz")
INDEX_CHECK_SAMPLE = 50


def search_text(rng: random.Random, client: int, number: int) -> str:
    """A search's text: one of the sample's questions, a word, and the sender's own numbers (never sent twice)."""
    return f"{rng.choice(QUERIES)} ({rng.choice(WORDS)} {client}.{number})"


def ingest_document(doc_id: str, rng: random.Random) -> dict[str, Any]:
    """A one-document ingest's document: a short note of 24 random words (~37 MiniLM tokens) under its id."""
    text = f"Load note {doc_id}: " + " ".join(rng.choices(WORDS, k=24)) + "."
    return {"id": doc_id, "text": text, "metadata": {"load_id": doc_id}}


@dataclass(frozen=True)
class LoadConfig:
    clients: int = 32
    duration_s: float = 60.0
    mix: dict[str, float] = field(default_factory=lambda: {"search": 0.8, "ingest": 0.2})
    collection: str = "sample"
    k: int = 5
    search_only_first: bool = True
    seed: int = 0
    timeout_s: float = 60.0
    warmup_s: float = 0.0
    """Seconds each measured phase's mix runs first, uncounted: a fresh server's first seconds (model kernels
    for new input shapes, first reads) are slower than its steady state, and the search-only phase, always the
    first, would otherwise carry them alone. Documents acknowledged while warming up are verified too."""
    rounds: int = 4
    """Slices each phase's `duration_s` is cut into, run in turn (search-only, mixed, search-only, mixed, ...)
    and pooled. A shared machine's speed drifts within minutes (another guest on the host, a clock change);
    with one long phase after the other, the drift lands on one side of the ratio. Alternating spreads it over
    both, so the ratio measures the server. 1 runs each phase whole."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.mix) - set(OPERATIONS))
        if unknown or not self.mix or any(w < 0 for w in self.mix.values()) or sum(self.mix.values()) <= 0:
            raise ValueError(f"mix {self.mix} must give non-negative weights to some of {', '.join(OPERATIONS)}")
        if not 1 <= self.clients <= 1024 or not 0 < self.duration_s <= 3600:
            raise ValueError("clients must be in 1..1024 and duration_s in (0, 3600]")
        if not 0 <= self.warmup_s <= 3600:
            raise ValueError(f"warmup_s must be in [0, 3600], got {self.warmup_s}")
        if not 1 <= self.rounds <= 60 or self.duration_s / self.rounds < 0.5:
            raise ValueError(f"rounds must be in 1..60 with slices of at least 0.5 s, got {self.rounds} rounds of "
                             f"{self.duration_s} s")


def parse_mix(text: str) -> dict[str, float]:
    """'search=0.8,ingest=0.2' -> {'search': 0.8, 'ingest': 0.2}."""
    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        try:
            mix[name.strip()] = float(weight)
        except ValueError:
            raise ValueError(f"mix entry {part!r} is not name=weight, e.g. search=0.8,ingest=0.2") from None
    return mix


@dataclass
class _Ledger:
    """Documents acknowledged and deleted by the run (one event loop: no locking)."""

    acknowledged: dict[str, str] = field(default_factory=dict)  # id -> text
    counter: int = 0


class _Done(NamedTuple):
    """How one operation ended, and the server's own timings when its answer gave them (see `Sample`)."""

    outcome: str
    server_ms: float | None = None
    embed_ms: float | None = None


class _Client:
    def __init__(self, index: int, config: LoadConfig, ledger: _Ledger) -> None:
        self.index, self.config, self.ledger = index, config, ledger
        self.http: RawConnection  # a fresh connection for each slice it runs (`_run_slice`)
        self.rng = random.Random(config.seed * 1_000_003 + index)
        self.mine: list[str] = []
        self.searches = 0
        self.base = f"/v1/collections/{config.collection}"

    async def run(self, mix: dict[str, float], deadline: float, out: list[Sample]) -> None:
        ops, weights = list(mix), list(mix.values())
        while time.monotonic() < deadline:
            op = self.rng.choices(ops, weights)[0]
            if op == "delete" and not self.mine:
                op = "ingest"
            started = time.perf_counter()
            try:
                done = await getattr(self, op)()
            except HttpClientError as exc:
                done = _Done(type(exc.__cause__ or exc).__name__)
            out.append(Sample(op, (time.perf_counter() - started) * 1000.0, done.outcome, done.server_ms,
                              done.embed_ms))

    async def search(self) -> _Done:
        self.searches += 1
        query = search_text(self.rng, self.index, self.searches)
        r = await self.http.request("POST", f"{self.base}/search", {"query": query, "k": self.config.k})
        if r.status_code != 200:
            return _Done(str(r.status_code))
        answer = r.json()
        timings = answer.get("timings_ms") or {}
        return _Done("ok" if answer["hits"] else "no hits", timings.get("total_ms"), timings.get("embed_ms"))

    async def ingest(self) -> _Done:
        self.ledger.counter += 1
        doc_id = f"load-{self.index}-{self.ledger.counter}"
        doc = ingest_document(doc_id, self.rng)
        r = await self.http.request("POST", f"{self.base}/documents", {"documents": [doc]})
        if r.status_code != 201:
            return _Done(str(r.status_code))
        self.ledger.acknowledged[doc_id] = doc["text"]
        self.mine.append(doc_id)
        return _Done("ok", r.json().get("took_ms"))

    async def delete(self) -> _Done:
        doc_id = self.mine.pop(self.rng.randrange(len(self.mine)))
        r = await self.http.request("DELETE", f"{self.base}/documents/{doc_id}")
        if r.status_code != 204:
            return _Done(str(r.status_code))
        self.ledger.acknowledged.pop(doc_id, None)
        return _Done("ok")

    async def answer(self) -> _Done:
        body = {"question": self.rng.choice(QUERIES), "collection": self.config.collection, "k": 3,
                "max_tokens": 16}
        r = await self.http.request("POST", "/v1/answer", body)
        return _Done("ok" if r.status_code == 200 else str(r.status_code))


@dataclass
class _Slice:
    """One stretch of a phase: its samples, wall time, and the CPU seconds read around it."""

    samples: list[Sample]
    elapsed_s: float
    server_cpu_s: float | None
    driver_cpu_s: float
    idle_cpu_s: float
    steal_cpu_s: float


async def _run_slice(url: str, config: LoadConfig, mix: dict[str, float], clients: list[_Client],
                     duration_s: float, server_pid: int | None) -> _Slice:
    """The clients run `mix` for `duration_s` on fresh connections (a server closes a keep-alive connection left
    idle while another slice runs)."""
    samples: list[Sample] = []
    connections = [RawConnection(url, timeout_s=config.timeout_s) for _ in clients]
    for client, http in zip(clients, connections, strict=True):
        client.http = http
    try:
        before = _cpu_reading(server_pid)
        started = time.monotonic()
        deadline = started + duration_s
        await asyncio.gather(*(c.run(mix, deadline, samples) for c in clients))
        elapsed = time.monotonic() - started
        after = _cpu_reading(server_pid)
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    server = None if after[0] is None or before[0] is None else after[0] - before[0]
    return _Slice(samples, elapsed, server, after[1] - before[1], after[2] - before[2], after[3] - before[3])


def _pooled(name: str, slices: list[_Slice]) -> PhaseStats:
    """A phase's statistics over all of its slices: samples together, times and CPU seconds summed."""
    elapsed = sum(s.elapsed_s for s in slices)
    servers = [s.server_cpu_s for s in slices]
    server = None if any(x is None for x in servers) else sum(x for x in servers if x is not None)
    driver, idle, steal = (sum(getattr(s, f) for s in slices) for f in ("driver_cpu_s", "idle_cpu_s", "steal_cpu_s"))
    other = None if server is None else max(0.0, (os.cpu_count() or 1) * elapsed - server - driver - idle - steal)
    return phase_stats(name, [x for s in slices for x in s.samples], elapsed, server_cpu_s=server,
                       driver_cpu_s=driver, idle_cpu_s=idle, other_cpu_s=other, steal_cpu_s=steal)


def _cpu_reading(server_pid: int | None) -> tuple[float | None, float, float, float]:
    """CPU seconds so far of the server (when it runs here), of this driver, of the machine's idle, and taken
    by the host (steal)."""
    return (None if server_pid is None else process_cpu_s(server_pid), time.process_time(), machine_idle_s(),
            machine_steal_s())


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` and its threads so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15


def machine_idle_s() -> float:
    """Idle CPU seconds of all cores so far: idle + iowait of /proc/stat's first line."""
    fields = _cpu_line()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def machine_steal_s() -> float:
    """CPU seconds so far that a virtual machine's host gave to others while this machine wanted them
    (/proc/stat's steal); 0 on bare metal. No process here is charged for them, and they are not idle."""
    fields = _cpu_line()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def _cpu_line() -> list[str]:
    """The fields of /proc/stat's first line: "cpu", then clock ticks of all cores by kind."""
    return Path("/proc/stat").read_text().split("\n", 1)[0].split()


async def _verify(url: str, config: LoadConfig, ledger: _Ledger) -> Verification:
    base = f"/v1/collections/{config.collection}"
    gate = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=url, timeout=config.timeout_s) as http:

        async def present(doc_id: str) -> bool:
            async with gate:
                return (await http.get(f"{base}/documents/{doc_id}")).status_code == 200

        async def searchable(doc_id: str) -> bool:
            body = {"query": ledger.acknowledged[doc_id], "k": 1, "filter": {"load_id": doc_id}}
            async with gate:
                r = await http.post(f"{base}/search", json=body)
            return r.status_code == 200 and [h["document_id"] for h in r.json()["hits"]] == [doc_id]

        ids = sorted(ledger.acknowledged)
        found = await asyncio.gather(*(present(i) for i in ids))
        sample = random.Random(config.seed).sample(ids, min(INDEX_CHECK_SAMPLE, len(ids)))
        indexed = await asyncio.gather(*(searchable(i) for i in sample))
    return Verification(acknowledged=len(ids), lost=found.count(False), index_checked=len(sample),
                        index_missing=indexed.count(False))


async def drive(url: str, config: LoadConfig, *, on_phase: Callable[[str], None] | None = None,
                server_pid: int | None = None, server: dict[str, str] | None = None) -> LoadResult:
    """Run the phases against the server at `url` and verify; the result carries targets and provenance, and
    the server's CPU per phase when its process id is given (a server on this machine)."""
    sha = package_git_sha()  # the code the run starts on: a commit made while it runs must not relabel it
    ledger = _Ledger()
    runs = [("search_only", {"search": 1.0})] if config.search_only_first and config.mix.get("search") else []
    plan = [*runs, ("mixed", config.mix)]
    clients = {name: [_Client(i, config, ledger) for i in range(config.clients)] for name, _ in plan}
    slices: dict[str, list[_Slice]] = {name: [] for name, _ in plan}
    for round_ in range(config.rounds):
        for name, mix in plan:
            if round_ == 0 and config.warmup_s > 0:
                if on_phase:
                    on_phase(f"{name} warm-up")
                await _run_slice(url, config, mix, clients[name], config.warmup_s, server_pid)  # not counted
            if on_phase:
                on_phase(name if config.rounds == 1 else f"{name} ({round_ + 1} of {config.rounds})")
            slices[name].append(await _run_slice(url, config, mix, clients[name],
                                                 config.duration_s / config.rounds, server_pid))
    phases = [_pooled(name, slices[name]) for name, _ in plan]
    verification = await _verify(url, config, ledger)
    ratio = search_ratio(phases)
    provenance = {"git_sha": sha, "cpu": cpu_model(), "cpu_isa": " ".join(cpu_isa()),
                  "driver": "asyncio HTTP/1.1 (bench/http_client.py), a connection per client", **(server or {})}
    return LoadResult(config=_config_json(config), provenance=provenance, phases=phases,
                      verification=verification, search_throughput_ratio=ratio,
                      targets=targets(phases, verification, ratio))


def run_load(config: LoadConfig, *, url: str | None = None, data_dir: Path | None = None,
             server_env: dict[str, str] | None = None, on_phase: Callable[[str], None] | None = None) -> LoadResult:
    """Drive `url`, or a `ragsvc serve --sample` started on `data_dir` (a fresh folder) for the run."""
    if url is None and data_dir is None:
        raise ValueError("give the URL of a running server or a data folder to start one on")
    if url is not None:
        return asyncio.run(drive(url, config, on_phase=on_phase))
    assert data_dir is not None
    with serve_process(data_dir, sample=True, env=server_env) as child:
        return asyncio.run(drive(child.url, config, on_phase=on_phase, server_pid=child.pid,
                                 server=server_embedding(server_env)))


def server_embedding(server_env: dict[str, str] | None) -> dict[str, str]:
    """How the started server runs its embedding model (lanes, torch threads a lane), as it will resolve them
    from the environment it inherits: what a run's figures depend on most."""
    env = {**os.environ, **(server_env or {})}
    cores = os.cpu_count() or 1
    lanes = lanes_for(int(env.get("RAGSVC_API__EMBED_LANES", "0")), cores)
    threads = threads_per_lane(int(env.get("RAGSVC_API__EMBED_THREADS", "0")), lanes=lanes, num_cores=cores)
    return {"server_cores": str(cores), "server_embed_lanes": str(lanes),
            "server_embed_threads_per_lane": str(threads) if threads else "torch's choice"}


def _config_json(config: LoadConfig) -> dict[str, Any]:
    return asdict(config)
