"""`ragsvc bench speculative`: single-stream decode speed with prompt-lookup speculation against plain decoding.

The prompts are what `/v1/answer` sends the model: the answer instructions, the question, numbered passages,
the question again (`answer.prompt.answer_prompt`'s layout), in the model's chat template. Questions and
passages come from HotpotQA (the dev-100 BEIR folder under the data root): each question's supporting
paragraphs (its qrels) stand in for retrieved passages, followed by the next question's supporting
paragraphs as distractors, as a retriever's top 4 would mix them.

Two engines with the same weights and settings but for `speculative` run every prompt one at a time, greedy,
alternating which goes first so that drift on a shared machine falls on both. Decode speed is output tokens
after the first over the time from the first token to the last (prefill excluded; it is the same work in
both); end-to-end speed is shown too. Whether every output is token-identical is recorded, with the first
differing position where one is not (bf16 logits of a multi-token verify chunk and of a one-token decode come
from different kernels, so a near-tie may flip). JSON carries the CPU model and git sha.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragsvc.answer.prompt import PassageLog, answer_prompt
from ragsvc.bench.provenance import cpu_model, package_git_sha
from ragsvc.errors import InvalidInput
from ragsvc.evals.loaders import load_beir
from ragsvc.serving.config import EngineConfig
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.sampling_params import SamplingParams
from ragsvc.serving.speculative import SpecStats
from ragsvc.types import ChunkId, DocumentId, Hit

DATASET = "hotpotqa_dev100"


@dataclass(frozen=True)
class SpeculativeBenchConfig:
    data_root: Path
    model: str = "smollm2"
    dtype: str = "auto"
    num_prompts: int = 20
    max_tokens: int = 128
    num_speculative_tokens: int = 4
    prompt_lookup_min: int = 2
    prompt_lookup_max: int = 4
    threads: int | None = 1
    """torch threads; one by default, as a single stream gains little from a second and the box is shared."""
    passage_tokens: int = 700
    """Budget for the passages (approximate tokens, as `/v1/answer` packs them)."""
    cache_dir: str | None = None
    concurrency: int = 1
    """Above 1, the prompts also run as a closed loop of this many requests at once, plain vs speculative: what
    speculation does to throughput once a step's tokens already fill the GEMMs."""

    def __post_init__(self) -> None:
        if not 1 <= self.num_prompts <= 100:
            raise ValueError(f"num_prompts must be in [1, 100] (the dataset has 100 questions), got {self.num_prompts}")
        if not 1 <= self.concurrency <= 64:
            raise ValueError(f"concurrency must be in [1, 64], got {self.concurrency}")
        if not 2 <= self.max_tokens <= 2048:
            raise ValueError(f"max_tokens must be in [2, 2048], got {self.max_tokens}")

    def engine_config(self, *, speculative: bool) -> EngineConfig:
        return EngineConfig(
            model=self.model, dtype=self.dtype, num_threads=self.threads, cache_dir=self.cache_dir,
            speculative="prompt-lookup" if speculative else None, num_speculative_tokens=self.num_speculative_tokens,
            prompt_lookup_min=self.prompt_lookup_min, prompt_lookup_max=self.prompt_lookup_max,
        )


@dataclass
class _Run:
    """One request's marks: prompt length, output ids, time to the first token and from it to the last."""

    prompt_tokens: int
    output_ids: list[int] = field(default_factory=list)
    ttft_s: float = 0.0
    decode_s: float = 0.0


def _dataset_folder(cfg: SpeculativeBenchConfig) -> Path:
    folder = cfg.data_root / DATASET
    if not folder.is_dir():
        raise InvalidInput(f"{folder} not found: pass --data-root pointing at the folder holding {DATASET}/")
    return folder


def rag_prompts(tokenizer: Any, cfg: SpeculativeBenchConfig) -> list[list[int]]:
    """The first `num_prompts` HotpotQA questions as chat-templated answer prompts (token ids)."""
    ds = load_beir(_dataset_folder(cfg))
    qids = list(ds.queries)
    out = []
    for i, qid in enumerate(qids[: cfg.num_prompts]):
        doc_ids = list(ds.qrels[qid]) + list(ds.qrels[qids[(i + 1) % len(qids)]])
        hits = [Hit(ChunkId(n), DocumentId(d), f"{ds.corpus[d].title}: {ds.corpus[d].text}", 1.0)
                for n, d in enumerate(doc_ids)]
        passages = PassageLog(max_tokens=cfg.passage_tokens)
        passages.add(hits, max_tokens=cfg.passage_tokens)
        messages = answer_prompt(ds.queries[qid], passages, "")
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        out.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    return out


def _run_one(engine: LLMEngine, request_id: str, prompt: list[int], params: SamplingParams) -> _Run:
    run = _Run(len(prompt))
    start = time.perf_counter()
    first = None
    engine.add_request(request_id, prompt, params)
    while engine.has_unfinished():
        for out in engine.step():
            now = time.perf_counter()
            if first is None and out.output_token_ids:
                first = now
            if out.finished:
                run.output_ids = list(out.output_token_ids)
                run.ttft_s = (first or now) - start
                run.decode_s = now - (first or now)
    return run


def _run_concurrent(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams, concurrency: int
                    ) -> tuple[float, list[list[int]]]:
    """Every prompt through a closed loop of `concurrency` requests -> (output tokens/s, outputs in prompt order)."""
    pending = list(enumerate(prompts))[::-1]
    outputs: dict[int, list[int]] = {}
    active = 0
    start = time.perf_counter()
    while pending or engine.has_unfinished():
        while pending and active < concurrency:
            i, prompt = pending.pop()
            engine.add_request(f"c{concurrency}-{i}", prompt, params)
            active += 1
        for out in engine.step():
            if out.finished:
                outputs[int(out.request_id.rsplit("-", 1)[1])] = list(out.output_token_ids)
                active -= 1
    wall = time.perf_counter() - start
    return sum(len(o) for o in outputs.values()) / wall, [outputs[i] for i in range(len(prompts))]


def _first_difference(a: list[int], b: list[int]) -> int | None:
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


@dataclass(frozen=True)
class DecodeSummary:
    output_tokens: int
    decode_tok_per_s: float
    """Output tokens after the first over the time from the first token to the last."""
    end_to_end_tok_per_s: float
    decode_s: float
    ttft_mean_ms: float


@dataclass(frozen=True)
class PromptResult:
    prompt_tokens: int
    output_tokens: int
    plain_decode_s: float
    spec_decode_s: float
    first_difference: int | None
    """First output position where the two engines' tokens differ; None when identical."""


@dataclass(frozen=True)
class SpeculativeBenchResult:
    config: SpeculativeBenchConfig
    git_sha: str
    cpu_model: str
    dtype: str
    plain: DecodeSummary
    prompt_lookup: DecodeSummary
    spec_stats: dict[str, float]
    """Steps that carried drafts, drafts proposed and accepted, acceptance rate, tokens emitted per such step."""
    decode_speedup: float
    decode_speedup_identical: float | None
    """The decode speed-up over the prompts whose outputs are identical only (same tokens, same work)."""
    end_to_end_speedup: float
    identical_outputs: int
    per_prompt: tuple[PromptResult, ...]
    concurrent: dict[str, float] | None = None
    """With concurrency > 1: {"concurrency", "plain_tok_per_s", "spec_tok_per_s", "speedup", "identical_outputs"}."""

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["config"]["data_root"] = self.config.data_root.name  # the folder's name, not a machine path
        doc["config"].pop("cache_dir")
        doc["config"]["model"] = Path(self.config.model).name  # an alias, or a model file's name without its folder
        doc["per_prompt"] = [asdict(p) for p in self.per_prompt]
        return {"benchmark": "speculative", **doc}


def _summary(runs: list[_Run]) -> DecodeSummary:
    out_tokens = sum(len(r.output_ids) for r in runs)
    decode_tokens = sum(max(len(r.output_ids) - 1, 0) for r in runs)
    decode_s = sum(r.decode_s for r in runs)
    total_s = sum(r.ttft_s + r.decode_s for r in runs)
    return DecodeSummary(output_tokens=out_tokens,
                         decode_tok_per_s=round(decode_tokens / decode_s, 2) if decode_s else 0.0,
                         end_to_end_tok_per_s=round(out_tokens / total_s, 2), decode_s=round(decode_s, 3),
                         ttft_mean_ms=round(1000 * sum(r.ttft_s for r in runs) / len(runs), 1))


def _speedup_identical(per_prompt: tuple[PromptResult, ...]) -> float | None:
    same = [p for p in per_prompt if p.first_difference is None]
    spec_s = sum(p.spec_decode_s for p in same)
    return round(sum(p.plain_decode_s for p in same) / spec_s, 3) if same and spec_s else None


def run_speculative_bench(cfg: SpeculativeBenchConfig) -> SpeculativeBenchResult:
    """Plain vs prompt-lookup engines over the same prompts (see the module docstring)."""
    _dataset_folder(cfg)  # refuse a missing data folder before loading two models
    plain = LLMEngine.from_config(cfg.engine_config(speculative=False))
    spec = LLMEngine.from_config(cfg.engine_config(speculative=True))
    prompts = rag_prompts(plain.tokenizer, cfg)
    params = SamplingParams(temperature=0.0, max_tokens=cfg.max_tokens)
    for name, engine in (("plain", plain), ("spec", spec)):  # warm-up: kernels built, caches touched
        _run_one(engine, f"warmup-{name}", prompts[-1][:64], SamplingParams(temperature=0.0, max_tokens=8))
    spec.spec_stats = SpecStats()  # count the measured prompts only
    runs: dict[str, list[_Run]] = {"plain": [], "spec": []}
    for i, prompt in enumerate(prompts):
        for name in ("plain", "spec") if i % 2 == 0 else ("spec", "plain"):
            runs[name].append(_run_one(plain if name == "plain" else spec, f"{name}-{i}", prompt, params))
    per_prompt = tuple(
        PromptResult(a.prompt_tokens, len(a.output_ids), round(a.decode_s, 4), round(b.decode_s, 4),
                     _first_difference(a.output_ids, b.output_ids))
        for a, b in zip(runs["plain"], runs["spec"], strict=True)
    )
    plain_sum, spec_sum = _summary(runs["plain"]), _summary(runs["spec"])
    concurrent = None
    if cfg.concurrency > 1:
        (plain_rate, plain_out), (spec_rate, spec_out) = (
            _run_concurrent(e, prompts, params, cfg.concurrency) for e in (plain, spec))
        concurrent = {"concurrency": cfg.concurrency, "plain_tok_per_s": round(plain_rate, 2),
                      "spec_tok_per_s": round(spec_rate, 2), "speedup": round(spec_rate / plain_rate, 3),
                      "identical_outputs": sum(a == b for a, b in zip(plain_out, spec_out, strict=True))}
    return SpeculativeBenchResult(
        config=cfg, git_sha=package_git_sha(), cpu_model=cpu_model(),
        dtype=str(next(plain.runner.model.parameters()).dtype).removeprefix("torch."),
        plain=plain_sum, prompt_lookup=spec_sum, spec_stats=spec.spec_stats.as_dict(),
        decode_speedup=round(spec_sum.decode_tok_per_s / plain_sum.decode_tok_per_s, 3),
        decode_speedup_identical=_speedup_identical(per_prompt),
        end_to_end_speedup=round(spec_sum.end_to_end_tok_per_s / plain_sum.end_to_end_tok_per_s, 3),
        identical_outputs=sum(p.first_difference is None for p in per_prompt), per_prompt=per_prompt,
        concurrent=concurrent,
    )
