"""What quantised weights cost in quality: perplexity on a fixed text and greedy-token agreement with bf16.

- **Perplexity**: the packaged sample corpus (ragsvc/sample/*.md, in name order), its first `text_tokens`
  tokens scored in one prefill whose every row reaches the LM head.
- **Greedy agreement**: the model's own weights (`bf16`) decode `max_tokens` greedy tokens for each of 20
  fixed prompts (chat template applied); every other format is then fed the same prompt and the same tokens
  (teacher-forced, all prompts decoding together, so the decode kernels run) and agreement is the share of
  positions where its argmax is bf16's token. Teacher forcing keeps one early flip from counting every later
  token as a disagreement; `first_divergence` still reports where free-running greedy decoding would part.

Every format runs in the same process, one engine at a time, with the same dtype and the same prompts.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from typing import Any

import torch

from ragsvc.bench.provenance import cpu_model, package_git_sha
from ragsvc.bench.serving_workload import portable_config
from ragsvc.serving.config import EngineConfig
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.layers.quant_linear import linear_bytes
from ragsvc.serving.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

PROMPTS = (
    "Write a Python function that returns the n-th Fibonacci number.",
    "Explain what a hash map is in two sentences.",
    "What is the capital of France, and what river runs through it?",
    "Write a SQL query that counts orders per customer.",
    "Summarise the idea of paged attention for a language model server.",
    "Give three tips for writing readable code.",
    "Write a bash one-liner that counts the lines of every .py file in a folder.",
    "What does BM25 score, and why does it saturate term frequency?",
    "Write a JavaScript function that debounces another function.",
    "Why is the sky blue? Answer briefly.",
    "Write a Rust function that reverses a string.",
    "What is the difference between a process and a thread?",
    "Explain retrieval-augmented generation to a new engineer.",
    "Write a Python class for a stack with push, pop and peek.",
    "List the planets of the solar system in order from the sun.",
    "What is a B-tree and where is it used?",
    "Write a function in C that computes the length of a string.",
    "How does HNSW find nearest neighbours quickly?",
    "Translate 'good morning, how are you?' into French and Spanish.",
    "Write a regular expression that matches an email address, and explain it.",
)


@dataclass(frozen=True)
class FormatQuality:
    weights: str
    perplexity: float
    agreement: float | None
    """Share of teacher-forced positions whose argmax is bf16's greedy token (None for bf16 itself)."""
    first_divergence: list[int] | None
    """Per prompt, the first position whose argmax differs from bf16's token (max_tokens when none does)."""
    linear_bytes: int
    """Bytes of linear weights one decode step reads (LM head included)."""
    load_s: float
    seconds: float


@dataclass
class QualityResult:
    model: str
    dtype: str
    text_tokens: int
    num_prompts: int
    max_tokens: int
    git_sha: str = field(default_factory=package_git_sha)
    cpu: str = field(default_factory=cpu_model)
    formats: list[FormatQuality] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), **portable_config({"model": self.model})}


def fixed_text() -> str:
    root = files("ragsvc") / "sample"
    names = sorted(p.name for p in root.iterdir() if p.name.endswith(".md"))
    return "\n\n".join((root / n).read_text(encoding="utf-8") for n in names)


def _all_row_logits(engine: LLMEngine, token_ids: list[int]) -> torch.Tensor:
    """(tokens, vocab) fp32 logits for every position of `token_ids`, from one prefill."""
    engine.add_request("ppl", token_ids, SamplingParams(temperature=0, max_tokens=1, ignore_eos=True))
    sched = engine.scheduler.schedule()
    if len(sched.chunks) != 1 or sched.chunks[0].num_new_tokens != len(token_ids):
        raise ValueError("the text did not fit one prefill step; lower text_tokens or raise max_num_batched_tokens")
    batch = engine.runner.prepare_whole(sched.chunks)
    batch.logit_rows = torch.arange(len(token_ids), device=batch.input_ids.device)
    logits = engine.runner.run(batch).float()
    engine.abort("ppl")
    engine.scheduler.schedule()  # let the aborted request's blocks go
    return logits


def perplexity(engine: LLMEngine, token_ids: list[int]) -> float:
    logits = _all_row_logits(engine, token_ids)  # (tokens, vocab)
    targets = torch.tensor(token_ids[1:])
    nll = torch.nn.functional.cross_entropy(logits[:-1], targets, reduction="mean")
    return math.exp(float(nll))


def forced_argmax(engine: LLMEngine, prompts: list[list[int]], script: list[list[int]]) -> list[list[int]]:
    """Each prompt decoded with `script`'s tokens appended whatever the model says -> its argmax per step."""
    steps = len(script[0])
    params = SamplingParams(temperature=0, max_tokens=steps, ignore_eos=True)
    for i, prompt in enumerate(prompts):
        engine.add_request(f"q{i}", prompt, params)
    argmax: dict[int, list[int]] = {i: [] for i in range(len(prompts))}
    while engine.scheduler.has_unfinished():
        sched = engine.scheduler.schedule()
        engine.runner.copy_blocks(sched.copies)
        logits, chunks = engine.runner.execute(sched.chunks)
        engine.scheduler.postprocess(sched)
        for row, chunk in enumerate(chunks):
            seq, i = chunk.seq, int(chunk.seq.request_id[1:])
            argmax[i].append(int(logits[row].argmax()))
            seq.token_ids.append(script[i][seq.num_output_tokens])
            if seq.num_output_tokens >= steps:
                engine.abort(seq.request_id)
    return [argmax[i] for i in range(len(prompts))]


def _tokenizer(engine: LLMEngine) -> Any:
    if engine.tokenizer is None:
        raise ValueError("the model folder ships no tokenizer; quality needs text prompts")
    return engine.tokenizer


def _prompt_ids(engine: LLMEngine, n: int) -> list[list[int]]:
    tok = _tokenizer(engine)
    out = []
    for text in PROMPTS[:n]:
        chat = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        out.append(tok.encode(chat, add_special_tokens=False))
    return out


def run_quality(*, model: str, weights: tuple[str, ...], dtype: str = "auto", cache_dir: str | None = None,
                text_tokens: int = 1024, num_prompts: int = 20, max_tokens: int = 32,
                threads: int | None = None) -> QualityResult:
    if weights[0] != "bf16":
        raise ValueError("the first format must be bf16: the others are compared with it")
    if not 1 <= num_prompts <= len(PROMPTS):
        raise ValueError(f"num_prompts must be 1..{len(PROMPTS)}")
    result = QualityResult(model=model, dtype=dtype, text_tokens=text_tokens, num_prompts=num_prompts,
                           max_tokens=max_tokens)
    script: list[list[int]] = []
    for fmt in weights:
        started = time.perf_counter()
        engine = LLMEngine.from_config(EngineConfig(model=model, dtype=dtype, weights=fmt, cache_dir=cache_dir,
                                                    num_threads=threads, max_num_batched_tokens=max(2048, text_tokens)))
        loaded = time.perf_counter()
        dtype_size = next(engine.runner.model.parameters()).element_size()
        nbytes = linear_bytes(engine.runner.model, element_size=dtype_size)
        text_ids = _tokenizer(engine).encode(fixed_text(), add_special_tokens=False)[:text_tokens]
        ppl = perplexity(engine, text_ids)
        prompts = _prompt_ids(engine, num_prompts)
        if not script:  # bf16: its free-running greedy tokens become the script
            outs = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True))
            script = [list(o.output_token_ids) for o in outs]
            result.formats.append(FormatQuality(fmt, ppl, None, None, nbytes, round(loaded - started, 1),
                                                round(time.perf_counter() - loaded, 1)))
        else:
            got = forced_argmax(engine, prompts, script)
            same = [[a == b for a, b in zip(g, s, strict=True)] for g, s in zip(got, script, strict=True)]
            agreement = sum(map(sum, same)) / sum(map(len, same))
            first = [next((j for j, ok in enumerate(row) if not ok), len(row)) for row in same]
            result.formats.append(FormatQuality(fmt, ppl, agreement, first, nbytes, round(loaded - started, 1),
                                                round(time.perf_counter() - loaded, 1)))
        logger.info("%s: %s", fmt, result.formats[-1])
        del engine
        gc.collect()
    return result
