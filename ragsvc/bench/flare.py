"""`ragsvc bench flare`: what reusing the KV cache across FLARE's rounds buys.

FLARE calls the model once per sentence (and again after each retrieval), and every call re-sends the whole
prompt: instructions, question, passages, the answer so far. Our prompt layout (ragsvc/answer/prompt.py)
keeps all but the newest part of it identical, so the engine's prefix cache serves it. The peer is the same
engine with prefix caching off, which is what an active-retrieval loop gets from a server that does not reuse
KV across requests. Both run the same questions, greedy, one at a time, in one process and run.

Reported: the share of prompt tokens served from the cache in rounds >= 2; the TTFT of those rounds against
the cold TTFT of the same call (same prompt, caching off); end-to-end seconds per answer for both. JSON with
the config, the CPU model and the git sha.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragsvc.answer.answerer import Answerer, AnswerOptions
from ragsvc.answer.types import Answer, FlareOptions
from ragsvc.bench.provenance import cpu_model, package_git_sha
from ragsvc.llm.in_process import InProcessGenerator
from ragsvc.retrieval.fuse import parse_fusion_mode
from ragsvc.retrieval.pipeline import RetrievalOptions, RetrievalPipeline
from ragsvc.retrieval.vector_store import VectorStore
from ragsvc.serving.config import EngineConfig
from ragsvc.types import DocumentInput

DEFAULT_QUESTIONS = (
    "How does paged attention store the KV cache?",
    "What does continuous batching change compared with static batching?",
    "How does FLARE decide when to retrieve again?",
    "What do generative agents store in their memory stream?",
    "How does HNSW find nearest neighbours?",
    "What is a Matryoshka embedding?",
)


@dataclass(frozen=True, slots=True)
class FlareBenchConfig:
    questions: tuple[str, ...] = DEFAULT_QUESTIONS
    theta: float = 0.6
    """Higher than FLARE's 0.4 default so that small models retrieve in most rounds: the costly case."""
    max_rounds: int = 6
    max_tokens: int = 160
    k: int = 4
    mode: str = "hybrid"
    engine: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        if not self.questions:
            raise ValueError("give at least one question")


@dataclass(frozen=True, slots=True)
class CallPair:
    """One model call of an answer, with caching on (warm) and off (cold), when both runs made the same call."""

    question: int
    index: int
    kind: str
    prompt_tokens: int
    cached_tokens: int
    warm_ttft_ms: float
    cold_ttft_ms: float


@dataclass(frozen=True, slots=True)
class FlareBenchResult:
    config: Mapping[str, Any]
    """FlareBenchConfig's fields (the engine's without its cache folder, a machine path) and the collection."""
    cached_share_rounds_2plus: float
    ttft_ratio_rounds_2plus: float
    """Median over calls of warm TTFT / cold TTFT, rounds >= 2."""
    seconds_per_answer: Mapping[str, float]
    """End to end, "prefix_cache" and "no_cache"."""
    calls: tuple[CallPair, ...]
    mismatched_calls: int
    """Calls skipped because the two runs' prompts differed (the answers diverged)."""
    cpu: str
    git_sha: str

    def to_json(self) -> dict[str, Any]:
        return {"config": dict(self.config), "cached_share_rounds_2plus": self.cached_share_rounds_2plus,
                "ttft_ratio_rounds_2plus": self.ttft_ratio_rounds_2plus,
                "seconds_per_answer": dict(self.seconds_per_answer), "calls": [asdict(c) for c in self.calls],
                "mismatched_calls": self.mismatched_calls, "cpu": self.cpu, "git_sha": self.git_sha}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FlareBenchResult:
        return cls(data["config"], data["cached_share_rounds_2plus"], data["ttft_ratio_rounds_2plus"],
                   data["seconds_per_answer"], tuple(CallPair(**c) for c in data["calls"]),
                   data["mismatched_calls"], data["cpu"], data["git_sha"])


def run_flare_bench(store: VectorStore, collection: str, cfg: FlareBenchConfig,
                    progress: Callable[[int, int], None] | None = None) -> FlareBenchResult:
    """Answer every question with FLARE twice, caching on then off, and pair up their model calls."""
    runs: dict[str, list[Answer]] = {}
    seconds: dict[str, float] = {}
    pipeline = RetrievalPipeline(store)
    options = RetrievalOptions(mode=parse_fusion_mode(cfg.mode), k=cfg.k)
    flare = FlareOptions(theta=cfg.theta, max_rounds=cfg.max_rounds, max_tokens=cfg.max_tokens)
    total = 2 * len(cfg.questions)
    done = 0
    for name, caching in (("prefix_cache", True), ("no_cache", False)):
        engine = EngineConfig(**{**asdict(cfg.engine), "enable_prefix_caching": caching})
        with InProcessGenerator.from_config(engine) as generator:
            _warm_up(generator)
            answers = []
            started = time.perf_counter()
            for question in cfg.questions:
                def retrieve(query: str) -> tuple[list[Any], dict[str, float]]:
                    found = pipeline.retrieve(collection, query, options)
                    return found.hits, found.timings_ms

                answers.append(Answerer(generator, retrieve, options=AnswerOptions()).answer(question, flare=flare))
                done += 1
                if progress is not None:
                    progress(done, total)
            seconds[name] = (time.perf_counter() - started) / len(cfg.questions)
            runs[name] = answers
    calls, mismatched = pair_calls(runs["prefix_cache"], runs["no_cache"])
    later = [c for c in calls if c.index > 0]
    share = sum(c.cached_tokens for c in later) / max(1, sum(c.prompt_tokens for c in later))
    ratio = statistics.median(c.warm_ttft_ms / c.cold_ttft_ms for c in later) if later else float("nan")
    engine_fields = {k: v for k, v in asdict(cfg.engine).items() if k != "cache_dir"}  # a machine path
    config = {**asdict(cfg), "engine": engine_fields, "collection": collection}
    return FlareBenchResult(config, round(share, 4), round(ratio, 4),
                            {k: round(v, 2) for k, v in seconds.items()}, tuple(calls), mismatched, cpu_model(),
                            package_git_sha())


def pair_calls(warm: Sequence[Answer], cold: Sequence[Answer]) -> tuple[list[CallPair], int]:
    """Calls at the same position of the same answer, kept while both runs sent the same number of prompt
    tokens (greedy decoding makes the runs identical until numerics differ)."""
    pairs: list[CallPair] = []
    mismatched = 0
    for q, (a, b) in enumerate(zip(warm, cold, strict=True)):
        for i, (w, c) in enumerate(zip(a.generations, b.generations, strict=False)):
            if w.prompt_tokens != c.prompt_tokens or w.kind != c.kind:
                mismatched += max(len(a.generations), len(b.generations)) - i
                break
            pairs.append(CallPair(q, i, w.kind, w.prompt_tokens, w.cached_tokens, w.ttft_ms, c.ttft_ms))
    return pairs, mismatched


def sample_collection(store: VectorStore, name: str = "bench-flare") -> str:
    """The sample corpus shipped in ragsvc/sample, ingested once into `name`."""
    from ragsvc.errors import CollectionNotFound
    from ragsvc.store.files import read_documents

    try:
        store.get_collection(name)
    except CollectionNotFound:
        store.create_collection(name, chunk_tokens=96, chunk_overlap=16)
    sample = Path(__file__).resolve().parents[1] / "sample"
    docs = [DocumentInput(text=d.text, id=Path(d.id or "").stem, source=d.source)
            for p in sorted(sample.glob("*.md")) for d in read_documents(p)]
    store.add_documents(name, docs)
    return name


def _warm_up(generator: InProcessGenerator) -> None:
    generator.generate("Warm up the engine.", max_tokens=4)
