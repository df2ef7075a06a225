"""A tiny random Qwen2 through the engine in every weight format: logits near bf16's, packed weights cached.

Logits are compared teacher-forced (every engine is fed the same tokens), since on a random model a
near-tie flips greedy decoding and the contexts would then differ. Hidden size 80 makes K = 80 and 200, not
multiples of the 32-weight block, so the padding path runs inside a real model too. Decode steps of 4
sequences run the fused kernels; prompts longer than the measured prefill threshold take the expand + GEMM
path.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ragsvc.serving.config import EngineConfig
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.layers.quant_linear import QuantLinear, use_quant_kernels
from ragsvc.serving.sampling_params import SamplingParams

PROMPT_LENGTHS = (5, 17, 1, 40)
STEPS = 6
REL_RMS_TOLERANCE = {"int8": 0.04, "q4": 0.35, "q4-all": 0.4}
"""Root-mean-square logit error over the logits' RMS, against the same engine with the model's own weights
(fp32); measured 0.021-0.024 (int8) and 0.25 (q4). Why q4's is large here: on Gaussian weights a 16-level
32-block leaves ~8% noise per weight, and this model's 9 linears add theirs up (~sqrt(9) x 8%); trained
models are far less sensitive (the Qwen2.5-Coder figures in eval/baselines/quant-quality-*.json)."""


@pytest.fixture(scope="module")
def tiny_odd_qwen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=512, hidden_size=80, intermediate_size=200, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         rms_norm_eps=1e-6, tie_word_embeddings=True, initializer_range=0.1)
    model = Qwen2ForCausalLM(config).float().eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):  # HF initialises biases to zero, which would hide a lost bias
                param.copy_(torch.randn(param.shape) * 0.1)
    folder = tmp_path_factory.mktemp("tiny-odd-qwen2")
    model.save_pretrained(folder)
    return folder


def _engine(folder: Path, weights: str, cache: Path, dtype: str = "float32") -> LLMEngine:
    return LLMEngine.from_config(EngineConfig(model=str(folder), dtype=dtype, device="cpu", weights=weights,
                                              cache_dir=str(cache), num_kv_blocks=64))


def _forced_logits(engine: LLMEngine) -> torch.Tensor:
    """Every step's logits for fixed prompts, appending the same scripted tokens whatever the model says."""
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 500, (n,), generator=g).tolist() for n in PROMPT_LENGTHS]
    script = torch.randint(3, 500, (len(prompts), STEPS), generator=g).tolist()
    params = SamplingParams(temperature=0, max_tokens=STEPS, ignore_eos=True)
    for i, prompt in enumerate(prompts):
        engine.add_request(f"r{i}", prompt, params)
    rows: dict[str, list[torch.Tensor]] = {f"r{i}": [] for i in range(len(prompts))}
    while engine.scheduler.has_unfinished():
        sched = engine.scheduler.schedule()
        engine.runner.copy_blocks(sched.copies)
        logits, chunks = engine.runner.execute(sched.chunks)
        engine.scheduler.postprocess(sched)
        for row, chunk in enumerate(chunks):
            seq = chunk.seq
            rows[seq.request_id].append(logits[row])
            seq.token_ids.append(script[int(seq.request_id[1:])][seq.num_output_tokens])
            if seq.num_output_tokens >= STEPS:
                engine.abort(seq.request_id)
    return torch.stack([x for r in rows.values() for x in r])  # (requests * steps, vocab)


@pytest.fixture(scope="module")
def reference_logits(tiny_odd_qwen2: Path, tmp_path_factory: pytest.TempPathFactory) -> torch.Tensor:
    return _forced_logits(_engine(tiny_odd_qwen2, "bf16", tmp_path_factory.mktemp("cache")))


@pytest.mark.parametrize("weights", ["int8", "q4", "q4-all"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_quantised_logits_near_the_models_own(tiny_odd_qwen2, reference_logits, tmp_path, weights, dtype) -> None:
    engine = _engine(tiny_odd_qwen2, weights, tmp_path, dtype)
    linears = [m for m in engine.runner.model.modules() if isinstance(m, QuantLinear)]
    assert len(linears) == 2 * 4 + 1  # qkv, o, gate_up, down per layer, and the LM head
    assert all(m.kernels is not None for m in linears)
    logits = _forced_logits(engine)
    assert logits.shape == reference_logits.shape
    err = (logits - reference_logits).pow(2).mean().sqrt() / reference_logits.pow(2).mean().sqrt()
    tolerance = REL_RMS_TOLERANCE[weights]
    assert err <= tolerance, f"{weights}/{dtype}: relative RMS logit error {err:.4f} > {tolerance}"
    assert err > 0  # the quantised path really ran


def test_packed_weights_are_cached_and_read_back(tiny_odd_qwen2, tmp_path) -> None:
    first = _forced_logits(_engine(tiny_odd_qwen2, "q4", tmp_path))
    files = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(files) == 1 and "-q4-" in files[0]
    stamp = (tmp_path / files[0]).stat().st_mtime_ns
    second = _forced_logits(_engine(tiny_odd_qwen2, "q4", tmp_path))
    assert (tmp_path / files[0]).stat().st_mtime_ns == stamp  # read, not rewritten
    torch.testing.assert_close(second, first, rtol=0, atol=0)


def _use_vnni_from(engine: LLMEngine, tokens: int, *, int8_weights: tuple[int, int] = (0, 0)) -> None:
    """Every q4 step of `tokens` or more on the int8-activation kernel (0: never), whatever this CPU measured;
    the AMX kernel, which would go first, off; int8 weights on that kernel's int8-weight form for steps in the
    `int8_weights` window (default: never, the fused kernel with exact activations)."""
    for m in engine.runner.model.modules():
        if isinstance(m, QuantLinear) and m.plan is not None:
            m.use_kernels(m.kernels, replace(m.plan, vnni_tokens=tokens, vnni_until=0, amx_tokens=0,
                                             i8_tokens=int8_weights[0], i8_until=int8_weights[1]))


def test_reference_path_matches_the_kernels(tiny_odd_qwen2, tmp_path) -> None:
    """The same q4 model with its quantised kernels off (plain-torch de-quantise-then-matmul) gives the same
    logits as its bf16-activation kernels, up to summation order: rounding activations to bf16 (q4 multiplies
    bf16 pairs) turns a last-bit difference into a bf16 step now and then, so the bound is relative RMS, not
    elementwise (measured 1-2e-3; a wrong block or scale gives ~0.1)."""
    engine = _engine(tiny_odd_qwen2, "q4", tmp_path)
    _use_vnni_from(engine, 0)
    fast = _forced_logits(engine)
    engine = _engine(tiny_odd_qwen2, "q4", tmp_path)
    use_quant_kernels(engine.runner.model, None, None)
    slow = _forced_logits(engine)
    err = (fast - slow).pow(2).mean().sqrt() / slow.pow(2).mean().sqrt()
    assert err <= 5e-3, f"kernels vs reference: relative RMS logit difference {err:.2e}"


def test_int8_activation_kernel_in_the_model(tiny_odd_qwen2, tmp_path) -> None:
    """Every q4 step of 2+ tokens on the int8-activation kernel (prefill chunks and the 4-sequence decode
    steps): logits within 3e-2 relative RMS of the plain-torch reference (measured ~1.2e-2; each activation is
    rounded to half a step of its 32-block's range, coarser than bf16's half ulp), and not equal to the bf16
    kernels' (it really ran)."""
    from ragsvc.serving.layers import cpu_q4_vnni

    lib = cpu_q4_vnni.load()
    if lib is None or not cpu_q4_vnni.vectorised(lib):
        pytest.skip("needs AVX512_VNNI")
    engine = _engine(tiny_odd_qwen2, "q4", tmp_path)
    _use_vnni_from(engine, 2)
    int8 = _forced_logits(engine)
    _use_vnni_from(engine, 0)
    bf16 = _forced_logits(engine)
    use_quant_kernels(engine.runner.model, None, None)
    slow = _forced_logits(engine)
    err = (int8 - slow).pow(2).mean().sqrt() / slow.pow(2).mean().sqrt()
    assert err <= 3e-2, f"int8 activations vs reference: relative RMS logit difference {err:.2e}"
    assert not torch.equal(int8, bf16)


def test_int8_weight_form_in_the_model(tiny_odd_qwen2, tmp_path) -> None:
    """An int8 model with its decode-sized steps (up to 16 tokens: decode and the small prefill chunks) on the
    int8-weight form: logits within 3e-2 relative RMS of the plain-torch reference, as for int8 activations
    with q4 weights, and not equal to the fused kernel's (it really ran)."""
    from ragsvc.serving.layers import cpu_q4_vnni

    lib = cpu_q4_vnni.load()
    if lib is None or cpu_q4_vnni.int8_limit(lib) == 0:
        pytest.skip("needs AVX512_VNNI")
    engine = _engine(tiny_odd_qwen2, "int8", tmp_path)
    _use_vnni_from(engine, 0, int8_weights=(1, cpu_q4_vnni.int8_limit(lib)))
    form = _forced_logits(engine)
    _use_vnni_from(engine, 0)
    fused = _forced_logits(engine)
    use_quant_kernels(engine.runner.model, None, None)
    slow = _forced_logits(engine)
    err = (form - slow).pow(2).mean().sqrt() / slow.pow(2).mean().sqrt()
    assert err <= 3e-2, f"int8 weights x int8 activations vs reference: relative RMS logit difference {err:.2e}"
    assert not torch.equal(form, fused)


def test_unknown_weight_format_is_refused() -> None:
    with pytest.raises(ValueError, match="weights 'q3' is not supported"):
        EngineConfig(weights="q3")


def test_q4_all_puts_the_lm_head_in_q4_too(tiny_odd_qwen2, tmp_path) -> None:
    formats = {name: m.qw.fmt for name, m in _engine(tiny_odd_qwen2, "q4-all", tmp_path).runner.model.named_modules()
               if isinstance(m, QuantLinear)}
    assert formats["lm_head"] == "q4" and set(formats.values()) == {"q4"}
    head = next(m for n, m in _engine(tiny_odd_qwen2, "q4", tmp_path).runner.model.named_modules() if n == "lm_head")
    assert isinstance(head, QuantLinear) and head.qw.fmt == "int8"


NEAR_TIE = 0.05
"""Largest top-1 minus top-2 logprob gap at which a q4 speculative run may pick another token than plain
decoding: verification chunks (several tokens) and one-token decode steps run different q4 kernels (a bf16
panel GEMM or int8 activations against a per-row product), so their logits differ in the last bits to ~1e-2
relative (the tolerances above); a gap that small is a tie those differences can flip. A wrong draft
acceptance or a stale KV block after a rejection gives another token at a clear gap."""


def _repeating_prompts(n: int) -> list[list[int]]:
    """Prompts that repeat a span of themselves, so prompt lookup has drafts to propose."""
    g = torch.Generator().manual_seed(5)
    prompts = []
    for i in range(n):
        span = torch.randint(3, 500, (4 + i % 5,), generator=g).tolist()
        noise = torch.randint(3, 500, (3 + 2 * i,), generator=g).tolist()
        prompts.append(noise + span + noise[:2] + span)
    return prompts


@pytest.mark.parametrize("vnni_tokens", [0, 2], ids=["bf16-activations", "int8-activations"])
def test_q4_speculative_decoding_follows_plain_greedy(tiny_odd_qwen2, tmp_path, vnni_tokens) -> None:
    """q4 weights with prompt-lookup speculation: every request's tokens equal plain greedy decoding's up to the
    end, or up to a step where plain decoding's top two tokens were a near-tie (NEAR_TIE); drafts were accepted
    and every KV block came back. On an AVX512-VNNI EPYC all six requests came out identical in both settings,
    with 39 of 68 drafts accepted."""
    engines = []
    for speculative in (None, "prompt-lookup"):
        engine = LLMEngine.from_config(EngineConfig(model=str(tiny_odd_qwen2), dtype="float32", device="cpu",
                                                    weights="q4", cache_dir=str(tmp_path), num_kv_blocks=64,
                                                    speculative=speculative, num_speculative_tokens=4))
        _use_vnni_from(engine, vnni_tokens)
        engines.append(engine)
    plain, spec = engines
    prompts = _repeating_prompts(6)
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, logprobs=2)
    ours, theirs = spec.generate(prompts, params), plain.generate(prompts, params)
    assert spec.spec_stats.num_accepted_tokens > 0  # verification chunks really ran and kept drafts
    identical = 0
    for a, b in zip(theirs, ours, strict=True):
        pairs = enumerate(zip(a.output_token_ids, b.output_token_ids, strict=True))
        split = next((i for i, (x, y) in pairs if x != y), None)
        if split is None:
            identical += 1
            continue
        top = a.logprobs[split].top
        assert top[0][2] - top[1][2] <= NEAR_TIE, f"diverged at step {split} with a clear top-1 in plain decoding"
    assert identical >= len(prompts) // 2
    bm = spec.block_manager
    assert not spec.has_unfinished() and bm.num_free_blocks == bm.num_blocks
