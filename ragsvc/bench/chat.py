"""`ragsvc bench chat`: many chat sessions at once against one server, vs the same messages one at a time.

The service under test is the real one: `create_app` with the model hosted in-process, under uvicorn on
127.0.0.1, driven over HTTP with streamed replies (SSE). The town's residents (agents/town) are registered as
agents; each session talks to one of them and sends the same fixed messages in order. Two modes, each on a
fresh server and engine (neither inherits the other's prefix cache), with one warm-up message excluded:

- concurrent: every session posts from its own thread (messages of one session stay in order, as a user's do);
  the engine's continuous batching serves the sessions' replies together;
- sequential (the peer): the same messages, one at a time.

Reported per mode: messages per minute of wall time, reply latency and time to first text (p50, p95, as the
client sees them), prompt tokens and the share served from the prefix cache (an agent's persona and
instructions open every prompt of its sessions), completion tokens; then the ratio concurrent/sequential, the
CPU model and the git sha. Importance of each exchange is rated in the background in both modes, as the
service does, so its calls are part of what the engine serves.
"""

from __future__ import annotations

import json
import shutil
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ragsvc.agents.persona import load_town
from ragsvc.agents.registry import agent_id, persona_fields
from ragsvc.bench.provenance import cpu_model, package_git_sha
from ragsvc.bench.serving_workload import portable_config
from ragsvc.config import Settings, StoreSettings
from ragsvc.serving.config import EngineConfig

MODES = ("concurrent", "sequential")
MESSAGES = ("Good morning! How are you today?", "What are you working on this week?",
            "Who in the village do you see most often?", "What do you usually do in the evening?")


@dataclass(frozen=True, slots=True)
class ChatBenchConfig:
    town: Path = Path("agents/town")
    sessions: int = 4
    messages: int = 3
    """Messages per session (the first of MESSAGES, in order)."""
    max_tokens: int = 32
    engine: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.sessions <= 64 or not 1 <= self.messages <= len(MESSAGES) or not 1 <= self.max_tokens <= 512:
            raise ValueError(f"sessions must be in [1, 64], messages in [1, {len(MESSAGES)}], max_tokens in [1, 512]")


@dataclass(frozen=True, slots=True)
class Timed:
    ttft_ms: float
    total_ms: float
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class ModeResult:
    mode: str
    messages: int
    wall_s: float
    messages_per_min: float
    reply_p50_ms: float
    reply_p95_ms: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    prompt_tokens: int
    cached_prompt_tokens: int
    cached_share: float
    completion_tokens: int

    @classmethod
    def of(cls, mode: str, timed: Sequence[Timed], wall_s: float) -> ModeResult:
        prompt = sum(t.prompt_tokens for t in timed)
        cached = sum(t.cached_tokens for t in timed)
        totals, ttfts = [t.total_ms for t in timed], [t.ttft_ms for t in timed]
        return cls(mode=mode, messages=len(timed), wall_s=round(wall_s, 3),
                   messages_per_min=round(len(timed) / wall_s * 60, 2),
                   reply_p50_ms=_pct(totals, 50), reply_p95_ms=_pct(totals, 95),
                   ttft_p50_ms=_pct(ttfts, 50), ttft_p95_ms=_pct(ttfts, 95),
                   prompt_tokens=prompt, cached_prompt_tokens=cached,
                   cached_share=round(cached / prompt, 4) if prompt else 0.0,
                   completion_tokens=sum(t.completion_tokens for t in timed))


@dataclass(frozen=True, slots=True)
class ChatBenchResult:
    config: dict[str, Any]
    modes: tuple[ModeResult, ...]
    speedup: float
    """Messages per minute, concurrent over sequential."""
    cpu: str
    git_sha: str

    def to_json(self) -> dict[str, Any]:
        return {"benchmark": "chat", "config": self.config, "modes": [asdict(m) for m in self.modes],
                "speedup": self.speedup, "cpu": self.cpu, "git_sha": self.git_sha}


def _pct(values: Sequence[float], q: int) -> float:
    if len(values) < 2:
        return round(values[0], 1) if values else 0.0
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 1)


def send(client: httpx.Client, session: str, content: str, max_tokens: int) -> Timed:
    """One streamed message, timed as the client sees it."""
    started = time.perf_counter()
    ttft = 0.0
    final: dict[str, Any] | None = None
    with client.stream("POST", f"/v1/sessions/{session}/messages",
                       json={"content": content, "stream": True, "max_tokens": max_tokens}) as response:
        response.raise_for_status()
        kind = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: "):]
                if kind == "text" and not ttft:
                    ttft = (time.perf_counter() - started) * 1000
            elif line.startswith("data: ") and kind in ("reply", "error"):
                final = json.loads(line[len("data: "):])
    if final is None or kind == "error":
        raise RuntimeError(f"message to session {session} failed: {final}")
    total = (time.perf_counter() - started) * 1000
    usage = final["usage"]
    return Timed(ttft_ms=ttft or total, total_ms=total, prompt_tokens=usage["prompt_tokens"],
                 cached_tokens=usage["cached_tokens"], completion_tokens=usage["completion_tokens"])


def _run_mode(mode: str, client: httpx.Client, sessions: list[str], cfg: ChatBenchConfig) -> ModeResult:
    timed: list[Timed] = []
    lock = threading.Lock()

    def talk(session: str) -> None:
        for content in MESSAGES[: cfg.messages]:
            result = send(client, session, content, cfg.max_tokens)
            with lock:
                timed.append(result)

    started = time.perf_counter()
    if mode == "concurrent":
        threads = [threading.Thread(target=talk, args=(s,)) for s in sessions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for s in sessions:
            talk(s)
    wall = time.perf_counter() - started
    if len(timed) != len(sessions) * cfg.messages:
        raise RuntimeError(f"{mode}: {len(sessions) * cfg.messages - len(timed)} messages failed (see the log)")
    return ModeResult.of(mode, timed, wall)


def _one_mode(mode: str, cfg: ChatBenchConfig, data_dir: Path) -> ModeResult:
    from ragsvc.api.app import create_app
    from ragsvc.api.model_app import model_extension, serve_in_thread

    shutil.rmtree(data_dir, ignore_errors=True)
    app = create_app(Settings(store=StoreSettings(data_dir=data_dir)), extensions=[model_extension(cfg.engine)])
    residents = load_town(cfg.town).residents
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=600) as client:
        while client.get("/health").status_code != 200:  # the store loads in the background after startup
            time.sleep(0.05)
        for persona in residents:
            client.post("/v1/agents", json=persona_fields(persona)).raise_for_status()
        ids = [agent_id(p.name) for p in residents]
        sessions = [client.post(f"/v1/agents/{ids[i % len(ids)]}/sessions").json()["id"] for i in range(cfg.sessions)]
        warm = client.post(f"/v1/agents/{ids[0]}/sessions").json()["id"]
        send(client, warm, "Hello.", cfg.max_tokens)  # warm-up, excluded
        return _run_mode(mode, client, sessions, cfg)


def run_chat_bench(cfg: ChatBenchConfig, *, work_dir: Path) -> ChatBenchResult:
    modes = tuple(_one_mode(mode, cfg, work_dir / mode) for mode in MODES)
    by_mode = {m.mode: m for m in modes}
    speedup = by_mode["concurrent"].messages_per_min / by_mode["sequential"].messages_per_min
    config = portable_config({
        "town": str(cfg.town), "sessions": cfg.sessions, "messages_per_session": cfg.messages,
        "max_tokens": cfg.max_tokens, "model": cfg.engine.model, "dtype": cfg.engine.dtype,
        "num_threads": cfg.engine.num_threads, "messages": list(MESSAGES[: cfg.messages])}, keys=("town", "model"))
    return ChatBenchResult(config=config, modes=modes, speedup=round(speedup, 3), cpu=cpu_model(),
                           git_sha=package_git_sha())
