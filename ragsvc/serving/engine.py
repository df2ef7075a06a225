"""LLMEngine: requests in, RequestOutputs out, one scheduler step at a time.

    engine = LLMEngine.from_config(EngineConfig())
    engine.add_request("r1", "Hello", SamplingParams(max_tokens=8))
    while engine.has_unfinished():
        for out in engine.step(): ...

Notes on the shared interface (additions only; nothing in the agreed contract changed):
* String prompts are encoded with the tokenizer's defaults (as HF pipelines do); pass token ids to control
  the prompt exactly (e.g. from `tokenizer.apply_chat_template(..., tokenize=True)`).
* `generate()` returns whole outputs: `logprobs` holds every generated token and `new_text` the full text.
  `step()` outputs carry deltas (logprobs of the new token, `new_text` since the last output).
* `abort()` frees the blocks immediately; the request's final output (finish_reason "abort") is returned by
  the next `step()`. Aborting an unknown or finished id is a no-op.
* EOS tokens (generation_config + config + tokenizer, and the tokenizer's end-of-turn / end-of-text tokens
  such as Qwen's <|im_end|> and <|endoftext|>: see `loader.eos_token_ids`) end a request with "stop" unless
  `ignore_eos`; they appear in `output_token_ids` but not in `text`.
* Thread safety: one thread calls step(); any thread may call add_request / abort / kv_stats. The lock is
  not held during the forward pass, so those calls never wait for the model.
* `kv_stats()` adds "num_used_blocks" to the agreed keys.
* With `EngineConfig.speculative` set, a greedy request may get several tokens in one step (drafts its target
  accepted, see speculative.py): one output per request per step still, its delta covering them all.
  `spec_stats` counts drafts proposed and accepted.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence as ABCSequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ragsvc.errors import InvalidInput
from ragsvc.serving.block_manager import BlockManager
from ragsvc.serving.config import EngineConfig, resolve_device, resolve_dtype, resolve_graph_mode
from ragsvc.serving.detokenizer import TextState, update_text
from ragsvc.serving.loader import (
    default_cache_dir,
    eos_token_ids,
    load_hf_config,
    load_tokenizer,
    resolve_model_dir,
)
from ragsvc.serving.model_runner import ModelRunner, kv_bytes_per_block, load_model
from ragsvc.serving.outputs import RequestOutput, TokenLogprob
from ragsvc.serving.sampler import SampledToken, sample
from ragsvc.serving.sampling_params import SamplingParams, generator_seed
from ragsvc.serving.scheduler import ScheduledChunk, Scheduler
from ragsvc.serving.sequence import Sequence
from ragsvc.serving.speculative import SpecStats, num_accepted
from ragsvc.serving.step_split import SplitPolicy

logger = logging.getLogger(__name__)


@dataclass
class _Request:
    seq: Sequence
    generator: torch.Generator | None
    text: TextState = field(default_factory=TextState)
    new_logprobs: list[TokenLogprob] = field(default_factory=list)


class LLMEngine:
    def __init__(
        self,
        *,
        config: EngineConfig,
        runner: ModelRunner,
        tokenizer: Any | None,
        eos_ids: set[int],
        model_name: str,
        max_model_len: int,
        num_blocks: int,
    ) -> None:
        self.config = config
        self.runner = runner
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.model_name = model_name
        self.max_model_len = max_model_len
        self.vocab_size = runner.model.cfg.vocab_size
        self.block_manager = BlockManager(
            num_blocks, config.block_size, enable_prefix_caching=config.enable_prefix_caching
        )
        spec = config.speculative_config()
        self.scheduler = Scheduler(
            self.block_manager, max_num_seqs=config.max_num_seqs, max_num_batched_tokens=config.max_num_batched_tokens,
            proposer=spec.proposer() if spec else None, num_speculative_tokens=spec.num_tokens if spec else 0,
            max_prefill_tokens=config.max_prefill_tokens, prefill_order=config.prefill_order,
            max_wait_steps=config.max_wait_steps,
        )
        self.spec_stats = SpecStats()
        self._requests: dict[str, _Request] = {}
        self._aborted: list[RequestOutput] = []
        self._token_text: dict[int, str] = {}
        self._lock = threading.Lock()
        # HF fast tokenizers are not safe to call from two threads at once: the step thread detokenises
        # with its own copy, and encoding in add_request (any thread) is serialised by its own small lock.
        self._detokenizer = copy.deepcopy(tokenizer)
        self._encode_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: EngineConfig) -> LLMEngine:
        started = time.perf_counter()
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        device = resolve_device(config)
        dtype = resolve_dtype(config, device)
        model_dir = resolve_model_dir(config.model, cache_dir=config.cache_dir)
        hf = load_hf_config(model_dir)
        tokenizer = load_tokenizer(model_dir)
        from ragsvc.serving.models.llama import ModelConfig

        cfg = ModelConfig.from_hf(hf)
        per_block = kv_bytes_per_block(cfg, block_size=config.block_size, dtype=dtype)
        num_blocks = config.num_kv_blocks or max(config.kv_cache_bytes // per_block, 1)
        capacity = num_blocks * config.block_size
        max_model_len = min(config.max_model_len or cfg.max_position_embeddings, cfg.max_position_embeddings, capacity)
        model = load_model(model_dir, dtype=dtype, device=device, max_positions=max_model_len, hf_config=hf,
                           weights=config.weights, quant_cache_dir=Path(config.cache_dir or default_cache_dir()))
        runner = ModelRunner(
            model,
            num_blocks=num_blocks,
            block_size=config.block_size,
            cpu_kernels=config.cpu_kernels,
            gpu_kernels=config.gpu_kernels,
            small_gemm=config.small_gemm,
            wide_gemm=config.wide_gemm,
            # an explicit float32 is the exactness path against HF: only "auto" takes the f32 decode GEMM
            f32_gemm=config.small_gemm and config.dtype == "auto" and dtype == torch.float32,
            split_policy=SplitPolicy() if config.split_steps else None,
            decode_graphs=resolve_graph_mode(config, device),
            max_num_seqs=config.max_num_seqs,
            max_model_len=max_model_len,
        )
        name = config.model if not config.model.startswith(("/", ".", "~")) else model_dir.name
        logger.info(
            "engine ready in %.1f s: %s %s on %s, %d KV blocks x %d tokens, max_model_len %d",
            time.perf_counter() - started,
            name,
            dtype,
            device,
            num_blocks,
            config.block_size,
            max_model_len,
        )
        return cls(
            config=config,
            runner=runner,
            tokenizer=tokenizer,
            eos_ids=eos_token_ids(model_dir, hf, tokenizer),
            model_name=name,
            max_model_len=max_model_len,
            num_blocks=num_blocks,
        )

    # -- requests --------------------------------------------------------------------------------------

    def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> None:
        token_ids = self._encode(prompt)
        if len(token_ids) + params.max_tokens > self.max_model_len:
            raise InvalidInput(
                f"prompt ({len(token_ids)} tokens) + max_tokens ({params.max_tokens}) exceeds the model's "
                f"context of {self.max_model_len} tokens; shorten the prompt or lower max_tokens"
            )
        generator = None if params.seed is None else torch.Generator().manual_seed(generator_seed(params.seed))
        with self._lock:
            if request_id in self._requests:
                raise InvalidInput(f"request id {request_id!r} is already in use; use a unique id")
            seq = Sequence(request_id, token_ids, params)
            self._requests[request_id] = _Request(seq, generator)
            self.scheduler.add(seq)

    def abort(self, request_id: str) -> None:
        """Stop a request and free its KV blocks now; its final output (reason "abort") comes with the next step."""
        with self._lock:
            req = self._requests.pop(request_id, None)
            if req is None:
                return
            self.scheduler.finish(req.seq, "abort")
            self._aborted.append(self._output(req, "", finished=True))

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished() or bool(self._aborted)

    # -- stepping --------------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """One scheduler step. The lock is held only to schedule and to apply results, not during the
        forward, so add_request / abort from other threads (the event loop) never wait for the model."""
        with self._lock:
            outputs, self._aborted = self._aborted, []
            sched = self.scheduler.schedule()
            if not sched.chunks:
                return outputs
            batch = self.runner.prepare(sched.chunks)
        # Blocks of a request aborted during the forward are only written (never handed out: allocation
        # happens in schedule(), under the lock), and its results are dropped below.
        self.runner.copy_blocks(sched.copies)
        logits = self.runner.logits(batch)
        with self._lock:
            self.scheduler.postprocess(sched)
            return outputs + self._sample_and_append(logits, batch.sampling_chunks) + self._take_aborted()

    def _sample_and_append(self, logits: torch.Tensor, chunks: list[ScheduledChunk]) -> list[RequestOutput]:
        """Sample each live chunk's rows (one, or one per draft + 1), accept drafts, append the emitted tokens."""
        spans: list[tuple[ScheduledChunk, _Request, int]] = []  # (chunk, request, its first row in `rows`)
        rows: list[int] = []
        first = 0
        for c in chunks:
            if not c.seq.is_finished:  # an abort during the forward drops the chunk's rows
                spans.append((c, self._requests[c.seq.request_id], len(rows)))
                rows.extend(range(first, first + c.num_logit_rows))
            first += c.num_logit_rows
        if not spans:
            return []
        picked = logits if len(rows) == logits.shape[0] else logits[rows]
        per_row = [(req.seq.params, req.generator) for c, req, _ in spans for _ in range(c.num_logit_rows)]
        sampled = sample(picked, [p for p, _ in per_row], [g for _, g in per_row])
        outputs = []
        for c, req, start in spans:
            toks = sampled[start : start + c.num_logit_rows]
            if not c.draft_token_ids:
                outputs.append(self._append_tokens(req, toks))
                continue
            accepted = num_accepted(c.draft_token_ids, [t.token_id for t in toks])
            self.spec_stats.add(len(c.draft_token_ids), accepted)
            outputs.append(self._append_tokens(req, toks[: accepted + 1]))
            self.scheduler.accept(c.seq, accepted)
        return outputs

    def _take_aborted(self) -> list[RequestOutput]:
        aborted, self._aborted = self._aborted, []
        return aborted

    def generate(
        self,
        prompts: ABCSequence[str | list[int]],
        params: SamplingParams | list[SamplingParams],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[RequestOutput]:
        """Run prompts to completion; final outputs in prompt order.

        Each returned output is whole: `logprobs` holds every generated token's entry and `new_text` the full
        text (unlike step(), whose outputs carry deltas). `progress`, when given, is called with (requests
        finished, requests total) as each one finishes; the caller decides whether and how to draw it.
        """
        plist = params if isinstance(params, list) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise InvalidInput(f"got {len(plist)} SamplingParams for {len(prompts)} prompts; give one or one each")
        base = f"gen-{time.monotonic_ns()}"
        ids = [f"{base}-{i}" for i in range(len(prompts))]
        for rid, prompt, p in zip(ids, prompts, plist, strict=True):
            self.add_request(rid, prompt, p)
        logprobs: dict[str, list[TokenLogprob]] = {rid: [] for rid in ids}
        final: dict[str, RequestOutput] = {}
        while len(final) < len(ids):
            for out in self.step():
                if out.request_id not in logprobs:
                    continue  # someone else's request sharing this engine
                logprobs[out.request_id].extend(out.logprobs)
                if out.finished:
                    out.logprobs, out.new_text = logprobs[out.request_id], out.text
                    final[out.request_id] = out
                    if progress is not None:
                        progress(len(final), len(ids))
        return [final[rid] for rid in ids]

    def kv_stats(self) -> dict:
        with self._lock:
            return self.block_manager.stats(list(self.scheduler.running))

    # -- internals -------------------------------------------------------------------------------------

    def _encode(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise InvalidInput("this model folder ships no tokenizer; pass the prompt as token ids")
            with self._encode_lock:
                token_ids = list(self.tokenizer.encode(prompt))
        else:
            token_ids = [int(t) for t in prompt]
            if any(t < 0 or t >= self.vocab_size for t in token_ids):
                raise InvalidInput(f"prompt token ids must be in [0, {self.vocab_size}); check the tokenizer")
        if not token_ids:
            raise InvalidInput("the prompt is empty; give at least one token")
        return token_ids

    def _append_tokens(self, req: _Request, toks: list[SampledToken]) -> RequestOutput:
        """Append a step's tokens (one, or several accepted at once) up to the first that ends the request.

        With stop strings the text is checked after every token, so a stop ends on the very token plain decoding
        would stop on; without them once, after the last (ids, EOS and max_tokens are checked per token)."""
        seq, params = req.seq, req.seq.params
        reason, delta = None, ""
        for i, tok in enumerate(toks):
            seq.token_ids.append(tok.token_id)
            if tok.logprob is not None:
                top = [(t, self._piece(t), lp) for t, lp in (tok.top or [])]
                req.new_logprobs.append(TokenLogprob(tok.token_id, self._piece(tok.token_id), tok.logprob, top))
            if (tok.token_id in self.eos_ids and not params.ignore_eos) or tok.token_id in params.stop_token_ids:
                reason = "stop"
            elif seq.num_output_tokens >= params.max_tokens or len(seq) >= self.max_model_len:
                reason = "length"
            if params.stop or reason is not None or i == len(toks) - 1:
                delta += update_text(self._detokenizer, seq.output_token_ids, params.stop, req.text,
                                     final=reason is not None)
                if req.text.stopped:
                    reason = "stop"
            if reason is not None:
                break
        if reason is not None:
            self.scheduler.finish(seq, reason)
            del self._requests[seq.request_id]
        return self._output(req, delta, finished=reason is not None)

    def _output(self, req: _Request, delta: str, *, finished: bool) -> RequestOutput:
        seq = req.seq
        logprobs, req.new_logprobs = req.new_logprobs, []
        return RequestOutput(
            request_id=seq.request_id,
            prompt_token_ids=seq.token_ids[: seq.num_prompt_tokens],
            output_token_ids=list(seq.output_token_ids),
            text=req.text.emitted,
            new_text=delta,
            logprobs=logprobs,
            finished=finished,
            finish_reason=seq.finish_reason if finished else None,
            num_cached_tokens=seq.num_cached_tokens,
        )

    def _piece(self, token_id: int) -> str:
        piece = self._token_text.get(token_id)
        if piece is None:
            piece = self._detokenizer.decode([token_id]) if self._detokenizer is not None else ""
            self._token_text[token_id] = piece
        return piece
