"""ModelRunner: owns the model weights and the paged KV cache; turns a scheduled step into logits.

Per layer the cache is a pair of tensors (num_blocks, block_size, num_kv_heads, head_dim). A step's chunks
are packed into one flat batch of tokens (no padding): single-token chunks first, then multi-token chunks,
so decodes share one batched attention call. Only the rows that sample reach the LM head.

On a CPU with several threads a large step may run as two halves instead (step_split.py says which
chunks go where, layers/cpu_threads.py why): each half is prepared like a step of its own, one half's forward
runs on a worker thread while the stepping thread runs the other, each on half the OpenMP threads, and their
logits are joined in the order of `SplitBatch.sampling_chunks`.

On a GPU, steps of single-token chunks replay CUDA graphs captured at start (decode_graphs.py); the runner then
keeps one KV block more than the block manager hands out, for the graphs' padding rows.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ragsvc.serving.decode_graphs import DecodeGraphs, GraphMode
from ragsvc.serving.layers import cpu_fused, cpu_paged_attention, cpu_prefill_attention, cpu_threads
from ragsvc.serving.layers.attention import AttentionMetadata, PrefillSegment
from ragsvc.serving.layers.linear import can_pack, pack_linears
from ragsvc.serving.layers.rotary import RotaryEmbedding, rope_inv_freq
from ragsvc.serving.loader import iter_weights, load_hf_config
from ragsvc.serving.models.llama import LlamaForCausalLM, ModelConfig, quantise_model
from ragsvc.serving.scheduler import ScheduledChunk
from ragsvc.serving.step_split import SplitPolicy, split_chunks

logger = logging.getLogger(__name__)


TABLE_ALIGN = 16
"""Block tables for the paged decode kernel are padded to a multiple of this many entries (`_add_kernel_tables`)."""


@dataclass
class PreparedBatch:
    input_ids: torch.Tensor  # (tokens,)
    positions: torch.Tensor  # (tokens,)
    meta: AttentionMetadata
    logit_rows: torch.Tensor  # (rows,) packed rows scored: each sampling chunk's last token (and its drafts)
    sampling_chunks: list[ScheduledChunk]


@dataclass
class SplitBatch:
    """A step run as two halves, `first` on the worker thread and `second` on the stepping thread."""

    first: PreparedBatch
    second: PreparedBatch

    @property
    def sampling_chunks(self) -> list[ScheduledChunk]:
        """The chunks the joined logits' rows belong to: the first half's, then the second's."""
        return self.first.sampling_chunks + self.second.sampling_chunks


class _Halves:
    """The worker and the thread counts of a runner that splits large steps."""

    def __init__(self, lib: ctypes.CDLL, threads: int, policy: SplitPolicy) -> None:
        self.lib, self.policy = lib, policy
        self.second_threads = threads - threads // 2
        self.worker = cpu_threads.HalfWorker(lib, threads // 2)


def _halves(device: torch.device, split_policy: SplitPolicy | None) -> _Halves | None:
    threads = torch.get_num_threads()
    if split_policy is None or device.type != "cpu" or threads < 2:
        return None
    lib = cpu_threads.load()
    return _Halves(lib, threads, split_policy) if lib is not None else None


def load_model(
    model_dir: Path, *, dtype: torch.dtype, device: torch.device, max_positions: int, hf_config: Any = None,
    weights: str = "bf16", quant_cache_dir: Path | None = None,
) -> LlamaForCausalLM:
    """The model in `dtype` on `device`; with `weights` "int8" / "q4" its linears are quantised (read from the
    cache under `quant_cache_dir` when there, else quantised and cached there; None = quantise, cache nothing)."""
    hf = hf_config if hf_config is not None else load_hf_config(model_dir)
    cfg = ModelConfig.from_hf(hf)
    inv_freq, scaling = rope_inv_freq(hf)
    # Build on the meta device (no random init of 100M+ weights), materialise on CPU in float32, copy the
    # checkpoint in, then cast once: exact for fp32 runs.
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg, rotary=RotaryEmbedding(inv_freq.to("meta"), max_positions=1))
    model = model.to_empty(device="cpu")
    model.rotary = RotaryEmbedding(inv_freq, max_positions=max_positions, scaling=scaling)  # real tables
    model.load_weights(iter_weights(model_dir))
    model = model.to(device=device, dtype=dtype).eval()
    if weights != "bf16":
        quantise_model(model, model_dir, weights, quant_cache_dir)
    elif can_pack(dtype, device):
        logger.info("packed %d linear layers for oneDNN", pack_linears(model, batch_hint=32))
    return model


def _cpu_kernel_ready(cfg: ModelConfig, dtype: torch.dtype) -> bool:
    shape_ok = cpu_paged_attention.supports(
        dtype=dtype, num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim
    )
    return shape_ok and cpu_paged_attention.load() is not None


def _prefill_kernel(cfg: ModelConfig, dtype: torch.dtype) -> ctypes.CDLL | None:
    lib = cpu_prefill_attention.load()
    ok = lib is not None and cpu_prefill_attention.supports(
        lib, dtype=dtype, num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim
    )
    return lib if ok else None


def kv_bytes_per_block(cfg: ModelConfig, *, block_size: int, dtype: torch.dtype) -> int:
    element = torch.empty((), dtype=dtype).element_size()
    return cfg.num_layers * 2 * block_size * cfg.num_kv_heads * cfg.head_dim * element


def has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def gpu_problem(block_size: int, *, has_triton: bool) -> str | None:
    """Why the engine cannot run on a GPU with these settings (said at start, not at the first decode), or None."""
    if not has_triton:
        return ("the engine's GPU kernels are written in Triton, which is not installed: pip install 'ragsvc[gpu]', "
                "or run on the CPU (--device cpu)")
    if block_size < 16 or block_size & (block_size - 1):
        return (f"block_size {block_size} cannot run on a GPU: the Triton attention kernel multiplies whole blocks "
                "on tensor cores, which needs a power of two of at least 16 (16 or 32)")
    return None


GPU_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
"""The SDPA implementations prompt chunks may take on CUDA: not cuDNN's, which torch prefers on Hopper. cuDNN builds
an execution plan on the host for every new sequence length, and for some lengths compiles kernels at run time: on
an H200 (torch 2.11, eval/gpu/profile_steps.py) a 400-token SmolLM2 prompt spent 41 ms of host time in 30 cuDNN
attention calls whose kernels ran 0.27 ms, the first 128-token prompt 0.41 s and the first chunk behind a cached
prefix 0.5-0.66 s. Flash and memory-efficient attention are compiled ahead of time; math is the fallback for what
neither takes. torch keeps the choice in process-wide flags while a forward runs: other SDPA callers in the process
(an embedder on the same GPU) can only lose cuDNN for that time, never get a backend that cannot run them."""


class ModelRunner:
    def __init__(
        self, model: LlamaForCausalLM, *, num_blocks: int, block_size: int, cpu_kernels: bool = True,
        gpu_kernels: bool = True,
        small_gemm: bool = False, wide_gemm: bool = False, f32_gemm: bool = False,
        split_policy: SplitPolicy | None = None, decode_graphs: GraphMode | None = None, max_num_seqs: int = 64,
        max_model_len: int | None = None,
    ) -> None:
        """`decode_graphs`: run decode steps through captured CUDA graphs ("capture", CUDA only) or through the
        same fixed buffers uncaptured ("eager", to check them on any device); None = every step runs as built.
        `max_num_seqs` and `max_model_len` size those buffers."""
        self.model = model
        self.block_size = block_size
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        if self.device.type == "cuda" and (problem := gpu_problem(block_size, has_triton=has_triton())) is not None:
            raise ValueError(problem)
        cfg = model.cfg
        self.paged_decode = self.device.type == "cuda" or (
            cpu_kernels and _cpu_kernel_ready(cfg, self.dtype)
        )
        """Decodes read K/V in place with a paged kernel (block tables); False = the torch gather reference."""
        self.prefill_kernel = _prefill_kernel(cfg, self.dtype) if cpu_kernels and self.device.type == "cpu" else None
        """The C++ causal prefill kernel, or None for per-segment SDPA."""
        self.prefill_form = cpu_prefill_attention.DPBF16 if self.prefill_kernel is None else \
            cpu_prefill_attention.best_form(self.prefill_kernel, num_heads=cfg.num_heads,
                                            num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim)
        """That kernel's form (cpu_prefill_attention.FORMS): the fastest measured on this CPU."""
        if self.prefill_kernel is not None and cpu_prefill_attention.sdpa_faster(
                self.prefill_kernel, num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
                form=self.prefill_form):
            logger.info("prefill attention: torch's SDPA (measured faster than the C++ kernel on this CPU)")
            self.prefill_kernel, self.prefill_form = None, cpu_prefill_attention.DPBF16
        elif self.prefill_kernel is not None:
            logger.info("prefill attention: the C++ kernel, %s form", cpu_prefill_attention.FORMS[self.prefill_form])
        if self.device.type == "cuda" and gpu_kernels:
            model.use_gpu_kernels()
        if self.device.type == "cpu":
            model.use_cpu_kernels(cpu_fused.load() if cpu_kernels else None, small_gemm=small_gemm,
                                  wide_gemm=wide_gemm, f32_gemm=f32_gemm)
        self.halves = _halves(self.device, split_policy)
        """How large steps run as two halves on two threads; None: every step runs whole."""
        graphs = decode_graphs if self.paged_decode else None  # the buffers hold the paged kernel's tables
        # the decode graphs' padding rows write into one block beyond those the block manager hands out
        shape = (num_blocks + (graphs is not None), block_size, cfg.num_kv_heads, cfg.head_dim)
        self.kv_caches = [
            (
                torch.zeros(shape, dtype=self.dtype, device=self.device),
                torch.zeros(shape, dtype=self.dtype, device=self.device),
            )
            for _ in range(cfg.num_layers)
        ]
        self.graphs: DecodeGraphs | None = None
        """Decode steps' fixed buffers and captured graphs (decode_graphs.py), or None."""
        if graphs is not None:
            longest = max_model_len if max_model_len is not None else num_blocks * block_size
            width = -(-longest // block_size)
            self.graphs = DecodeGraphs(self._forward, max_seqs=max_num_seqs,
                                       table_width=-(-width // TABLE_ALIGN) * TABLE_ALIGN,
                                       scratch_block=num_blocks, block_size=block_size, device=self.device,
                                       mode=graphs)
            try:
                with torch.inference_mode():
                    self.graphs.capture()
            except RuntimeError as exc:  # a driver or kernel that cannot be captured: serve, launching as before
                logger.warning("decode steps will launch their kernels one by one: capturing CUDA graphs failed "
                               "(%s); RAGSVC_MODEL__DECODE_GRAPHS=off skips the attempt", exc)
                self.graphs = None

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                 logit_rows: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, positions, self.kv_caches, meta, logit_rows)

    def copy_blocks(self, copies: list[tuple[int, int]]) -> None:
        """Copy-on-write: duplicate whole blocks (src -> dst) in every layer."""
        if not copies:
            return
        src = torch.tensor([s for s, _ in copies], device=self.device)
        dst = torch.tensor([d for _, d in copies], device=self.device)
        for k, v in self.kv_caches:
            k[dst] = k[src]
            v[dst] = v[src]

    def execute(self, chunks: list[ScheduledChunk]) -> tuple[torch.Tensor, list[ScheduledChunk]]:
        """Run one forward over the chunks -> ((samplers, vocab) float32 logits, the sampling chunks)."""
        batch = self.prepare(chunks)
        return self.run(batch).float(), batch.sampling_chunks

    def run(self, batch: PreparedBatch | SplitBatch) -> torch.Tensor:
        """`logits` of a prepared batch, on the CPU."""
        return self.logits(batch).cpu()

    def logits(self, batch: PreparedBatch | SplitBatch) -> torch.Tensor:
        """The forward of a prepared batch -> (samplers, vocab) logits in the model's dtype, on the model's device
        (the sampler takes greedy tokens and logprobs there, so a GPU step copies token ids, not logits; it makes
        a float32 copy only if it needs one). Reads no Sequence state, so it may run while other threads abort
        requests."""
        if isinstance(batch, SplitBatch):
            return self._run_halves(batch)
        return self._logits(batch, self.graphs)

    @torch.inference_mode()
    def _logits(self, batch: PreparedBatch, graphs: DecodeGraphs | None) -> torch.Tensor:
        if graphs is not None and graphs.takes(batch.input_ids.shape[0], batch.meta):
            return graphs.run(batch.input_ids, batch.positions, batch.meta, batch.logit_rows)
        if self.device.type == "cuda":
            with sdpa_kernel(GPU_SDPA_BACKENDS):
                return self._forward(batch.input_ids, batch.positions, batch.meta, batch.logit_rows)
        return self._forward(batch.input_ids, batch.positions, batch.meta, batch.logit_rows)

    def _run_halves(self, batch: SplitBatch) -> torch.Tensor:
        assert self.halves is not None  # prepare() splits only with halves
        # both halves run at once, so neither may use the decode graphs' one set of buffers
        job = self.halves.worker.submit(lambda: self._logits(batch.first, None))
        try:
            with cpu_threads.thread_count(self.halves.lib, self.halves.second_threads):
                second = self._logits(batch.second, None)
        finally:
            first = job.result()  # never leave the worker writing KV into the next step
        return torch.cat([first, second])  # (samplers, vocab), rows in SplitBatch.sampling_chunks order

    def prepare(self, chunks: list[ScheduledChunk]) -> PreparedBatch | SplitBatch:
        """Pack the chunks into flat tensors (reads block tables and token ids: call it under the engine lock);
        a large step as two halves when the runner splits them."""
        halves = split_chunks(chunks, self.halves.policy) if self.halves is not None else None
        if halves is not None:
            return SplitBatch(self.prepare_whole(halves[0]), self.prepare_whole(halves[1]))
        return self.prepare_whole(chunks)

    def prepare_whole(self, chunks: list[ScheduledChunk]) -> PreparedBatch:
        """`prepare` without the split: one batch of all the chunks (for callers that edit it)."""
        decodes = [c for c in chunks if c.num_new_tokens == 1]
        prefills = [c for c in chunks if c.num_new_tokens > 1]
        ordered = decodes + prefills
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        logit_rows: list[int] = []
        for c in ordered:
            ids.extend(c.token_ids)
            positions.extend(range(c.start, c.start + c.num_new_tokens))
            slots.extend(self._slots(c.seq.block_table, c.start, c.start + c.num_new_tokens))
            if c.samples:  # the last token's row, and one per speculative draft before it
                logit_rows.extend(range(len(ids) - c.num_logit_rows, len(ids)))
        meta = AttentionMetadata(slot_mapping=self._tensor(slots), num_decode_tokens=len(decodes),
                                 prefill_kernel=self.prefill_kernel, prefill_form=self.prefill_form)
        if decodes and self.paged_decode:
            self._add_kernel_tables(meta, decodes)
        elif decodes:
            meta.decode_blocks, meta.decode_mask = self._decode_context(decodes)
        row = len(decodes)
        for c in prefills:
            meta.prefills.append(self._prefill_segment(c, row))
            row += c.num_new_tokens
        return PreparedBatch(
            input_ids=self._tensor(ids),
            positions=self._tensor(positions),
            meta=meta,
            logit_rows=self._tensor(logit_rows),
            sampling_chunks=[c for c in ordered if c.samples],
        )

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)

    def _slots(self, block_table: list[int], start: int, end: int) -> list[int]:
        bs = self.block_size
        return [block_table[p // bs] * bs + p % bs for p in range(start, end)]

    def _decode_context(self, decodes: list[ScheduledChunk]) -> tuple[torch.Tensor, torch.Tensor]:
        """(decodes, max_blocks) block ids (padding -> block 0) and the (decodes, 1, 1, max_context) mask."""
        bs = self.block_size
        lens = [c.start + 1 for c in decodes]
        max_blocks = (max(lens) + bs - 1) // bs
        tables = [c.seq.block_table[:max_blocks] for c in decodes]
        rows = [t + [0] * (max_blocks - len(t)) for t in tables]
        table = torch.tensor(rows, dtype=torch.long, device=self.device)  # (decodes, max_blocks)
        pos = torch.arange(max_blocks * bs, device=self.device)  # (max_context,)
        mask = pos.unsqueeze(0) < self._tensor(lens).unsqueeze(1)  # (decodes, max_context)
        return table, mask[:, None, None, :]

    def _add_kernel_tables(self, meta: AttentionMetadata, decodes: list[ScheduledChunk]) -> None:
        # A multiple of TABLE_ALIGN wide: Triton compiles a kernel anew when an integer argument (the table's row
        # stride here) turns 1 or divisible by 16, which would stall a step in the middle of serving.
        longest = max(len(c.seq.block_table) for c in decodes)
        max_blocks = -(-longest // TABLE_ALIGN) * TABLE_ALIGN
        rows = [c.seq.block_table + [0] * (max_blocks - len(c.seq.block_table)) for c in decodes]
        meta.decode_block_tables = torch.tensor(rows, dtype=torch.int32, device=self.device)
        meta.decode_context_lens = torch.tensor([c.start + 1 for c in decodes], dtype=torch.int32, device=self.device)

    def _prefill_segment(self, c: ScheduledChunk, row: int) -> PrefillSegment:
        end = c.start + c.num_new_tokens
        if c.start == 0:
            return PrefillSegment(row, row + c.num_new_tokens, end, None, None)
        table = c.seq.block_table[: (end + self.block_size - 1) // self.block_size]
        consecutive = table == list(range(table[0], table[0] + len(table)))
        if self.prefill_kernel is not None:  # causal from positions: no mask to build
            return PrefillSegment(row, row + c.num_new_tokens, end, self._tensor(table), None,
                                  table[0] if consecutive else None)
        q_pos = torch.arange(c.start, end, device=self.device).unsqueeze(1)  # (chunk, 1)
        k_pos = torch.arange(end, device=self.device).unsqueeze(0)  # (1, context)
        mask = torch.zeros((c.num_new_tokens, end), dtype=self.dtype, device=self.device)  # (chunk, context)
        mask.masked_fill_(k_pos > q_pos, float("-inf"))
        return PrefillSegment(
            row, row + c.num_new_tokens, end, self._tensor(table), mask, table[0] if consecutive else None
        )
