"""The engine on a CUDA GPU: the Triton paged-attention and quantised-linear kernels inside a real model, against
HF transformers (float32, on the CPU) and against the same engine on the CPU; decode steps replayed from CUDA
graphs (on by default on a GPU, so every test here runs them) against the same steps launched one by one.

Marked gpu: skipped where torch sees no CUDA device. This project's machines have none; eval/gpu/check.sh runs
them on a lent one (eval/baselines/gpu-h200.md says which have run on an H200).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from ragsvc.serving.config import EngineConfig
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.layers.quant_linear import QuantLinear, use_quant_kernels
from ragsvc.serving.sampling_params import SamplingParams
from tests.serving.test_model_exact import _prompts, _run_collecting_logits
from tests.serving.test_quant_engine import (
    REL_RMS_TOLERANCE,
    _forced_logits,
    _repeating_prompts,
    tiny_odd_qwen2,  # noqa: F401 - a fixture, used by name
)

pytestmark = pytest.mark.gpu


def _engine(folder: Path, **overrides: object) -> LLMEngine:
    # 16 sequences at most: five decode graphs to capture per engine, not eleven
    options: dict[str, object] = dict(model=str(folder), dtype="float32", device="cuda", num_kv_blocks=256,
                                      max_num_seqs=16)
    options.update(overrides)
    return LLMEngine.from_config(EngineConfig(**options))  # type: ignore[arg-type]


def _assert_near_hf(hf_model: torch.nn.Module, seen: dict, *, rel: float) -> None:
    """Every step's logits within `rel` of the largest HF logit at that step."""
    for steps in seen.values():
        assert steps, "a request produced no logits"
        for context, ours in steps:
            with torch.no_grad():
                ref = hf_model(torch.tensor([context])).logits[0, -1]
            err = (ours.float().cpu() - ref).abs().max().item()
            assert err <= rel * ref.abs().max().item(), f"max logit error {err:.2e} at context length {len(context)}"


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2"])
def test_float32_logits_match_hf_on_a_mixed_batch(fixture, request) -> None:
    """Prefill chunks and paged decode steps together, contexts past one 16-slot block; fp32 everywhere, so
    the bound is the CPU exactness tests' (1e-3 of the logits' scale)."""
    folder, hf_model = request.getfixturevalue(fixture)
    engine = _engine(folder)
    assert engine.runner.device.type == "cuda" and engine.runner.paged_decode
    seen, _ = _run_collecting_logits(engine, _prompts([5, 17, 1, 33, 40]), max_tokens=6)
    _assert_near_hf(hf_model, seen, rel=1e-3)


def test_chunked_prefill_and_prefix_reuse(tiny_llama) -> None:
    folder, hf_model = tiny_llama
    engine = _engine(folder, max_num_batched_tokens=7)
    shared = _prompts([40], seed=5)[0]
    first, _ = _run_collecting_logits(engine, [shared + [7, 8, 9]], max_tokens=3)
    second, cached = _run_collecting_logits(engine, [shared + [10, 11, 12]], max_tokens=3, tag="s")
    assert cached["s0"] == 32  # two full 16-token blocks of the shared prefix reused
    _assert_near_hf(hf_model, first, rel=1e-3)
    _assert_near_hf(hf_model, second, rel=1e-3)


def test_preemption_and_prefix_caching_keep_the_tokens(tiny_llama) -> None:
    folder, _ = tiny_llama
    shared = _prompts([20], seed=9)[0]
    prompts = [shared + p for p in _prompts([3, 9, 1, 14, 6, 2], seed=10)]
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    plain = _engine(folder, enable_prefix_caching=False).generate(prompts, params)
    tight_engine = _engine(folder, num_kv_blocks=12)  # six sequences of ~60 tokens need 24 blocks
    tight = tight_engine.generate(prompts, params)
    assert tight_engine.scheduler.num_preemptions > 0
    assert [o.output_token_ids for o in tight] == [o.output_token_ids for o in plain]
    assert tight_engine.block_manager.num_free_blocks == 12


def test_bfloat16_tracks_float32_hf(tiny_qwen2) -> None:
    folder, hf_model = tiny_qwen2
    seen, _ = _run_collecting_logits(_engine(folder, dtype="bfloat16"), _prompts([9, 30, 50]), max_tokens=4)
    _assert_near_hf(hf_model, seen, rel=0.05)  # bf16 rounding, not a wrong kernel


@pytest.mark.parametrize("weights", ["int8", "q4"])
def test_quantised_model_matches_the_cpu_reference(tiny_odd_qwen2, tmp_path, weights) -> None:  # noqa: F811
    """The same packed weights (one cache folder: the CPU engine writes them, the CUDA engine reads them) give
    the same teacher-forced logits through the Triton kernels as through the CPU's de-quantise-then-matmul
    reference, in fp32 to summation order; and stay as near the model's own weights as on the CPU."""
    cpu = LLMEngine.from_config(EngineConfig(model=str(tiny_odd_qwen2), dtype="float32", device="cpu",
                                             weights=weights, cache_dir=str(tmp_path), num_kv_blocks=64))
    use_quant_kernels(cpu.runner.model, None, None)
    reference = _forced_logits(cpu)
    gpu = _engine(tiny_odd_qwen2, weights=weights, cache_dir=str(tmp_path), num_kv_blocks=64)
    assert all(m.qw.data.is_cuda for m in gpu.runner.model.modules() if isinstance(m, QuantLinear))
    got = _forced_logits(gpu).cpu()
    err = (got - reference).pow(2).mean().sqrt() / reference.pow(2).mean().sqrt()
    assert err <= 5e-3, f"{weights}: Triton vs CPU reference, relative RMS logit difference {err:.2e}"
    own = _forced_logits(_engine(tiny_odd_qwen2, cache_dir=str(tmp_path), num_kv_blocks=64)).cpu()
    err_own = (got - own).pow(2).mean().sqrt() / own.pow(2).mean().sqrt()
    assert 0 < err_own <= REL_RMS_TOLERANCE[weights]


def test_q4_model_quantised_on_load(tiny_odd_qwen2, tmp_path) -> None:  # noqa: F811
    """q4 with an empty cache: the formats are decided at load (keep_fine_weights compares each weight on the
    GPU with its quantised form), then served. The test above fills the cache on the CPU first, which skips that
    step; `ragsvc bench serving --device cuda --weights q4` failed here once with a CPU/GPU tensor mix."""
    engine = _engine(tiny_odd_qwen2, weights="q4", cache_dir=str(tmp_path), num_kv_blocks=64)
    formats = {m.qw.fmt for m in engine.runner.model.modules() if isinstance(m, QuantLinear)}
    assert formats == {"q4", "int8"}  # the LM head stays int8
    out = engine.generate(_prompts([5, 30]), SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    assert [len(o.output_token_ids) for o in out] == [4, 4]


def test_prompt_lookup_follows_plain_greedy(tiny_llama) -> None:
    """Speculative verification chunks and KV rollback on the GPU: the same tokens as plain greedy decoding,
    drafts accepted, every block back."""
    folder, _ = tiny_llama
    plain = _engine(folder)
    spec = _engine(folder, speculative="prompt-lookup", num_speculative_tokens=4)
    prompts = _repeating_prompts(6)
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    ours, theirs = spec.generate(prompts, params), plain.generate(prompts, params)
    assert spec.spec_stats.num_accepted_tokens > 0
    assert [o.output_token_ids for o in ours] == [o.output_token_ids for o in theirs]
    bm = spec.block_manager
    assert not spec.has_unfinished() and bm.num_free_blocks == bm.num_blocks


def _cudnn_ops(run) -> list[str]:
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    return sorted({e.name for e in prof.events() if "cudnn" in e.name.lower()})


def test_prompt_chunks_never_take_cudnn_attention(tiny_llama_d64) -> None:
    """cuDNN's SDPA plans every new sequence length on the host (model_runner.GPU_SDPA_BACKENDS): a fresh
    prompt and a chunk behind a cached prefix must run another implementation. The probe first shows that
    torch, left alone, would pick cuDNN for such a prompt here (else there is nothing to avoid)."""
    q = torch.randn(1, 4, 45, 64, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(1, 2, 45, 64, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    if not _cudnn_ops(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)):
        pytest.skip("torch's SDPA does not pick cuDNN on this GPU and torch: nothing to avoid")
    folder, _ = tiny_llama_d64  # SmolLM2's head size, which torch's SDPA sends to cuDNN on Hopper when let
    engine = _engine(folder, dtype="bfloat16")
    shared = _prompts([40], seed=21)[0]
    cached: dict = {}

    def fresh_then_behind_a_cached_prefix() -> None:
        for tag, suffix in (("a", [7, 8, 9, 10, 11]), ("b", [12, 13, 14, 15, 16, 17])):
            cached.update(_run_collecting_logits(engine, [shared + suffix], max_tokens=2, tag=tag)[1])

    seen = _cudnn_ops(fresh_then_behind_a_cached_prefix)
    assert cached["b0"] == 32  # the second prompt's last chunk read behind two cached blocks (the masked path)
    assert seen == [], f"prompt chunks ran cuDNN: {seen}"


def test_fused_elementwise_kernels_give_the_torch_paths_logits(tiny_qwen2) -> None:
    """RMSNorm, rotary and SiLU-and-multiply as Triton kernels (the default on a GPU, inside the decode graphs
    too) against torch's elementwise kernels: float32 logits to rounding."""
    folder, _ = tiny_qwen2
    prompts = _prompts([5, 17, 1, 33])
    plain, _ = _run_collecting_logits(_engine(folder, gpu_kernels=False), prompts, max_tokens=6)
    engine = _engine(folder)
    assert engine.runner.model.norm.gpu_kernels is not None and engine.runner.graphs is not None
    fused, _ = _run_collecting_logits(engine, prompts, max_tokens=6)
    _assert_same_steps(fused, plain, rel=1e-5)


def test_a_block_size_the_gpu_kernel_cannot_take_is_refused(tiny_llama) -> None:
    folder, _ = tiny_llama
    with pytest.raises(ValueError, match="block_size 8 cannot run on a GPU"):
        _engine(folder, block_size=8)


def _assert_same_steps(ours: dict, theirs: dict, *, rel: float) -> None:
    """The same requests saw the same contexts, and each step's logits are within `rel` of their largest."""
    assert ours.keys() == theirs.keys()
    for rid, steps in theirs.items():
        assert [context for context, _ in ours[rid]] == [context for context, _ in steps]
        for (_, got), (_, ref) in zip(ours[rid], steps, strict=True):
            got, ref = got.float().cpu(), ref.float().cpu()
            err = (got - ref).abs().max().item()
            assert err <= rel * ref.abs().max().item(), f"{rid}: max logit difference {err:.2e}"


def test_decode_graphs_give_the_steps_launched_one_by_one(tiny_llama) -> None:
    """Decode steps replayed from CUDA graphs (the default on a GPU) for groups of five, three and one sequences
    (padded to 8, 4 and 1), beside prefill steps that launch as before: the logits of the same steps launched
    kernel by kernel (float32; a padded batch may take another GEMM kernel, hence a tolerance), and near HF's."""
    folder, hf_model = tiny_llama
    plain_engine, engine = _engine(folder, decode_graphs="off"), _engine(folder)
    graphs = engine.runner.graphs
    assert graphs is not None and graphs.mode == "capture" and graphs.sizes == [1, 2, 4, 8, 16]
    for group, lengths in enumerate(([5, 17, 1, 33, 40], [9, 20, 3], [12])):
        prompts = _prompts(lengths, seed=3 + group)
        plain, _ = _run_collecting_logits(plain_engine, prompts, max_tokens=12, tag=f"g{group}-")
        replayed, _ = _run_collecting_logits(engine, prompts, max_tokens=12, tag=f"g{group}-")
        _assert_same_steps(replayed, plain, rel=1e-4)
        _assert_near_hf(hf_model, replayed, rel=1e-3)
    assert graphs.replays >= 30


@pytest.mark.parametrize("weights", ["int8", "q4"])
def test_quantised_decode_graphs(tiny_odd_qwen2, tmp_path, weights) -> None:  # noqa: F811
    """Triton's quantised linears inside a capture (their split-K partial sums are allocated there): the same
    steps' logits as launched one by one."""
    prompts = _prompts([5, 30, 12])
    options = dict(weights=weights, cache_dir=str(tmp_path), num_kv_blocks=64)
    plain, _ = _run_collecting_logits(_engine(tiny_odd_qwen2, decode_graphs="off", **options), prompts, max_tokens=8)
    engine = _engine(tiny_odd_qwen2, **options)
    replayed, _ = _run_collecting_logits(engine, prompts, max_tokens=8)
    assert engine.runner.graphs is not None and engine.runner.graphs.replays > 0
    _assert_same_steps(replayed, plain, rel=1e-3)


def test_the_sampler_takes_the_same_tokens_and_logprobs_from_gpu_logits() -> None:
    """An all-greedy batch is sampled where its logits are (token ids and logprobs copied back, not logits); a
    batch with a sampled row goes to the CPU's generators. Either way the results are the CPU's."""
    from ragsvc.serving.sampler import sample

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 300, generator=g).to(torch.bfloat16)
    logits[0, 9] = logits[0, 5] = logits[0].max() + 1  # a tie: the first maximum wins on both devices
    greedy = [SamplingParams(temperature=0), SamplingParams(temperature=0, logprobs=3)] * 2 + [
        SamplingParams(temperature=0, logprobs=0)]
    mixed = greedy[:3] + [SamplingParams(temperature=0.8, seed=7), SamplingParams(temperature=1.0, top_p=0.9, seed=8,
                                                                                  logprobs=2)]
    for params in (greedy, mixed):
        def generators(params=params):
            return [None if p.seed is None else torch.Generator().manual_seed(p.seed) for p in params]

        on_cpu = sample(logits, params, generators())
        on_gpu = sample(logits.cuda(), params, generators())
        assert [t.token_id for t in on_gpu] == [t.token_id for t in on_cpu]
        assert on_cpu[0].token_id == 5
        for a, b in zip(on_gpu, on_cpu, strict=True):
            assert (a.logprob is None) == (b.logprob is None)
            assert [i for i, _ in a.top or []] == [i for i, _ in b.top or []]
            assert [v for _, v in a.top or []] == pytest.approx([v for _, v in b.top or []], abs=1e-4)
            if a.logprob is not None:
                assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
