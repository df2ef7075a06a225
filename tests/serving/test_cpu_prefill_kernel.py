"""The C++ causal prefill kernel against SDPA in fp32 on the same bf16 inputs, and the engine using it."""

from __future__ import annotations

import ctypes

import pytest
import torch
import torch.nn.functional as F

from ragsvc.serving.layers import cpu_prefill_attention

FORMS = (cpu_prefill_attention.DPBF16, cpu_prefill_attention.FMA, cpu_prefill_attention.AMX)


@pytest.fixture(scope="module")
def lib():
    loaded = cpu_prefill_attention.load()
    if loaded is None:
        pytest.skip("no C++ compiler here: prefill attention stays on SDPA")
    if not loaded.prefill_supported(64):
        pytest.skip("this CPU has no AVX512-BF16: prefill attention stays on SDPA")
    return loaded


def _runnable(lib, form: int) -> None:
    if form not in cpu_prefill_attention.forms(lib):
        pytest.skip("no AMX here (or no tile data granted): the AMX form is not built or cannot run")


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention of q (chunk, heads, dim) at the last positions of k, v (context, kv_heads, dim), fp32."""
    n_q, n_k = q.shape[0], k.shape[0]
    allowed = torch.arange(n_k)[None, :] <= torch.arange(n_k - n_q, n_k)[:, None]  # (chunk, context)
    out = F.scaled_dot_product_attention(
        q.float().transpose(0, 1)[None], k.float().transpose(0, 1)[None], v.float().transpose(0, 1)[None],
        attn_mask=allowed, scale=scale, enable_gqa=True,
    )
    return out[0].transpose(0, 1)  # (chunk, heads, dim)


def _inputs(n_q: int, n_k: int, heads: int, kv_heads: int, dim: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    # q as the model hands it over: a strided view of the (tokens, heads + kv_heads, dim) rotary output
    q = torch.randn(n_q, heads + kv_heads, dim, generator=g).to(torch.bfloat16)[:, :heads]
    k = torch.randn(n_k, kv_heads, dim, generator=g).to(torch.bfloat16)
    v = torch.randn(n_k, kv_heads, dim, generator=g).to(torch.bfloat16)
    return q, k, v


@pytest.mark.parametrize(
    ("n_q", "n_k", "heads", "kv_heads", "dim"),
    [
        (1, 1, 9, 3, 64),  # a one-token prompt
        (7, 7, 9, 3, 64),  # fewer rows than a block of 4 x group
        (130, 130, 9, 3, 64),  # SmolLM2, a fresh prompt not a multiple of 16 or 64
        (33, 300, 9, 3, 64),  # a chunk behind 267 cached tokens
        (65, 65, 4, 4, 128),  # no GQA, head_dim 128
        (50, 181, 8, 2, 128),  # group of 4, head_dim 128, behind context
        (16, 16, 2, 1, 64),  # exactly one block of 16 tokens (the AMX form's work item) and 32 keys
        (47, 95, 6, 3, 128),  # blocks of 16 tokens with a remainder, keys past a 32-key block
    ],
)
@pytest.mark.parametrize("form", FORMS, ids=cpu_prefill_attention.FORMS)
def test_kernel_matches_fp32_reference(lib, n_q, n_k, heads, kv_heads, dim, form) -> None:
    _runnable(lib, form)
    q, k, v = _inputs(n_q, n_k, heads, kv_heads, dim, seed=n_q + n_k)
    out = torch.empty(n_q, heads, dim, dtype=torch.bfloat16)
    cpu_prefill_attention.prefill_attention(lib, q, k, v, out, scale=dim**-0.5, form=form)
    ref = _reference(q, k, v, dim**-0.5)
    # one bf16 rounding of the output, plus P rounded to bf16 before P.V (as torch's bf16 flash kernel does)
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=1e-2)
    # and a mutation check: ignoring the causal mask, or the context offset, is far outside that tolerance
    if n_k > 1:
        full = F.scaled_dot_product_attention(
            q.float().transpose(0, 1)[None], k.float().transpose(0, 1)[None], v.float().transpose(0, 1)[None],
            scale=dim**-0.5, enable_gqa=True,
        )[0].transpose(0, 1)
        assert (full - ref).abs().max() > 0.1


@pytest.mark.parametrize("form", FORMS, ids=cpu_prefill_attention.FORMS)
def test_writes_only_its_rows_of_a_shared_output(lib, form) -> None:
    _runnable(lib, form)
    q, k, v = _inputs(20, 20, 9, 3, 64, seed=5)
    shared = torch.full((30, 9, 64), 7.0, dtype=torch.bfloat16)  # a step's output: decodes, then this chunk
    cpu_prefill_attention.prefill_attention(lib, q, k, v, shared[6:26], scale=0.125, form=form)
    assert (shared[:6] == 7).all() and (shared[26:] == 7).all()
    torch.testing.assert_close(shared[6:26].float(), _reference(q, k, v, 0.125), atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize("form", FORMS, ids=cpu_prefill_attention.FORMS)
def test_large_scores_do_not_overflow(lib, form) -> None:
    _runnable(lib, form)
    q, k, v = _inputs(40, 90, 9, 3, 64, seed=6)
    q = q * 100  # scores in the hundreds: the softmax must subtract the max first
    out = torch.empty(40, 9, 64, dtype=torch.bfloat16)
    cpu_prefill_attention.prefill_attention(lib, q, k, v, out, scale=0.125, form=form)
    assert torch.isfinite(out.float()).all()
    torch.testing.assert_close(out.float(), _reference(q, k, v, 0.125), atol=3e-2, rtol=1e-2)


def test_bad_shapes_are_refused(lib) -> None:
    q, k, v = _inputs(10, 5, 9, 3, 64, seed=7)
    with pytest.raises(ValueError, match="cannot hold a chunk"):
        cpu_prefill_attention.prefill_attention(lib, q, k, v, torch.empty(10, 9, 64, dtype=torch.bfloat16),
                                                scale=0.125)
    assert not cpu_prefill_attention.supports(lib, dtype=torch.float32, num_heads=9, num_kv_heads=3, head_dim=64)
    assert not cpu_prefill_attention.supports(lib, dtype=torch.bfloat16, num_heads=4, num_kv_heads=2, head_dim=16)
    if cpu_prefill_attention.AMX not in cpu_prefill_attention.forms(lib):
        with pytest.raises(ValueError, match="cannot run here"):
            cpu_prefill_attention.prefill_attention(lib, q[:5], k, v, torch.empty(5, 9, 64, dtype=torch.bfloat16),
                                                    scale=0.125, form=cpu_prefill_attention.AMX)
    with pytest.raises(ValueError, match="cannot run here"):
        cpu_prefill_attention.prefill_attention(lib, q[:5], k, v, torch.empty(5, 9, 64, dtype=torch.bfloat16),
                                                scale=0.125, form=7)


def test_a_build_without_amx_has_no_amx_form(lib, tmp_path) -> None:
    """Built for a CPU with AVX512-BF16 but no AMX (Cooper Lake), the library reports no AMX form, refuses it,
    and its other forms still match the reference."""
    from tests.serving.kernel_builds import build_for_march

    built = build_for_march(tmp_path, "cpu_prefill_attention.cpp", "cooperlake",
                            {"prefill_attention_bf16": list(cpu_prefill_attention._ARGTYPES)})
    built.prefill_supported.argtypes, built.prefill_supported.restype = [ctypes.c_int64], ctypes.c_int64
    built.prefill_amx_available.argtypes, built.prefill_amx_available.restype = [], ctypes.c_int64
    assert cpu_prefill_attention.forms(built) == (cpu_prefill_attention.DPBF16, cpu_prefill_attention.FMA)
    q, k, v = _inputs(40, 90, 9, 3, 64, seed=8)
    with pytest.raises(ValueError, match="cannot run here"):
        cpu_prefill_attention.prefill_attention(built, q, k, v, torch.empty(40, 9, 64, dtype=torch.bfloat16),
                                                scale=0.125, form=cpu_prefill_attention.AMX)
    for form in cpu_prefill_attention.forms(built):
        out = torch.empty(40, 9, 64, dtype=torch.bfloat16)
        cpu_prefill_attention.prefill_attention(built, q, k, v, out, scale=0.125, form=form)
        torch.testing.assert_close(out.float(), _reference(q, k, v, 0.125), atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize("form", FORMS, ids=cpu_prefill_attention.FORMS)
def test_engine_prefills_through_the_kernel_and_tracks_hf(lib, tiny_llama_d64, monkeypatch, form) -> None:
    """bf16 engine with chunked prefill (chunks behind context) and a shared prefix: every prefill chunk goes
    through the kernel (in the form the per-CPU choice is made to give), and every step's logits stay within bf16
    rounding of HF's fp32 model."""
    from ragsvc.serving import model_runner
    from ragsvc.serving.config import EngineConfig
    from ragsvc.serving.engine import LLMEngine
    from ragsvc.serving.layers import attention

    from .test_model_exact import _run_collecting_logits

    _runnable(lib, form)
    folder, hf_model = tiny_llama_d64
    calls: list[tuple[int, int, int]] = []
    real = cpu_prefill_attention.prefill_attention

    def spy(lib_, q, k, v, out, *, scale, form):
        calls.append((q.shape[0], k.shape[0], form))
        return real(lib_, q, k, v, out, scale=scale, form=form)

    monkeypatch.setattr(attention.cpu_prefill_attention, "prefill_attention", spy)
    monkeypatch.setattr(model_runner.cpu_prefill_attention, "best_form", lambda *a, **kw: form)
    monkeypatch.setattr(model_runner.cpu_prefill_attention, "sdpa_faster", lambda *a, **kw: False)
    engine = LLMEngine.from_config(EngineConfig(model=str(folder), dtype="bfloat16", block_size=4, num_kv_blocks=256,
                                                max_num_batched_tokens=16))
    assert engine.runner.prefill_kernel is lib
    g = torch.Generator().manual_seed(3)
    shared = torch.randint(3, 500, (24,), generator=g).tolist()
    first, _ = _run_collecting_logits(engine, [shared + [5, 6, 7], torch.randint(3, 500, (41,), generator=g).tolist()],
                                      max_tokens=3)
    second, cached = _run_collecting_logits(engine, [shared + [9, 10]], max_tokens=3, tag="s")
    assert any(n_k > n_q for n_q, n_k, _ in calls)  # chunks behind context went through the kernel too
    assert {f for _, _, f in calls} == {form}
    assert cached["s0"] > 0  # and a chunk behind a reused prefix
    worst = 0.0
    for steps in [*first.values(), *second.values()]:
        for context, ours in steps:
            with torch.no_grad():
                ref = hf_model(torch.tensor([context])).logits[0, -1]
            worst = max(worst, float((ours - ref).abs().max() / ref.abs().max()))
    assert worst < 0.05  # bf16 rounding, not a wrong kernel


def test_the_faster_form_is_measured_once_per_cpu_and_shape(lib, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cpu_prefill_attention, "PROBE_TOKENS", 64)
    timed = []
    real = cpu_prefill_attention._time_forms

    def counting(*args, **kwargs):
        timed.append(kwargs)
        ms = real(*args, **kwargs)
        timed[-1]["ms"] = ms
        return ms

    monkeypatch.setattr(cpu_prefill_attention, "_time_forms", counting)
    first = cpu_prefill_attention.best_form(lib, num_heads=9, num_kv_heads=3, head_dim=64)
    ms = timed[0]["ms"]
    assert len(timed) == 1 and len(ms) == len(cpu_prefill_attention.forms(lib))  # every form this CPU runs
    assert first == cpu_prefill_attention.forms(lib)[ms.index(min(ms))]
    assert cpu_prefill_attention.best_form(lib, num_heads=9, num_kv_heads=3, head_dim=64) == first
    assert len(timed) == 1  # read back, not measured again
    cpu_prefill_attention.best_form(lib, num_heads=4, num_kv_heads=4, head_dim=128)
    assert len(timed) == 2  # another head shape is its own question


def test_sdpa_is_measured_against_the_kernel_once_per_cpu_and_shape(lib, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cpu_prefill_attention, "PROBE_TOKENS", 64)
    monkeypatch.setattr(cpu_prefill_attention, "CONTEXT_PROBE", (16, 80))
    timed = []
    real = cpu_prefill_attention._time_sdpa

    def counting(*args, **kwargs):
        timed.append(real(*args, **kwargs))
        return timed[-1]

    monkeypatch.setattr(cpu_prefill_attention, "_time_sdpa", counting)
    first = cpu_prefill_attention.sdpa_faster(lib, num_heads=9, num_kv_heads=3, head_dim=64, form=1)
    assert len(timed) == 1 and len(timed[0]) == 2  # a fresh prompt and a chunk behind context
    assert first == all(sdpa < kernel for kernel, sdpa in timed[0])
    assert cpu_prefill_attention.sdpa_faster(lib, num_heads=9, num_kv_heads=3, head_dim=64, form=1) == first
    assert len(timed) == 1  # read back, not measured again
    cpu_prefill_attention.sdpa_faster(lib, num_heads=9, num_kv_heads=3, head_dim=64, form=0)
    assert len(timed) == 2  # the other form is its own question


def test_where_sdpa_measured_faster_the_runner_leaves_prefill_to_it(lib, tiny_llama_d64, monkeypatch) -> None:
    from ragsvc.serving import model_runner
    from ragsvc.serving.config import EngineConfig
    from ragsvc.serving.engine import LLMEngine
    from ragsvc.serving.layers import attention

    from .test_model_exact import _run_collecting_logits

    folder, hf_model = tiny_llama_d64
    # both choices fixed: measuring them would call the kernel (spied on below) before the engine exists
    monkeypatch.setattr(model_runner.cpu_prefill_attention, "best_form", lambda *a, **kw: cpu_prefill_attention.FMA)
    monkeypatch.setattr(model_runner.cpu_prefill_attention, "sdpa_faster", lambda *a, **kw: True)
    kernel_calls = []
    monkeypatch.setattr(attention.cpu_prefill_attention, "prefill_attention", lambda *a, **kw: kernel_calls.append(1))
    engine = LLMEngine.from_config(EngineConfig(model=str(folder), dtype="bfloat16", block_size=4, num_kv_blocks=256,
                                                max_num_batched_tokens=16))
    assert engine.runner.prefill_kernel is None and engine.runner.prefill_form == cpu_prefill_attention.DPBF16
    g = torch.Generator().manual_seed(5)
    prompt = torch.randint(3, 500, (37,), generator=g).tolist()  # three chunks: two behind context
    steps, _ = _run_collecting_logits(engine, [prompt], max_tokens=2)
    assert not kernel_calls
    worst = 0.0
    for context, ours in next(iter(steps.values())):
        with torch.no_grad():
            ref = hf_model(torch.tensor([context])).logits[0, -1]
        worst = max(worst, float((ours - ref).abs().max() / ref.abs().max()))
    assert worst < 0.05  # bf16 rounding
