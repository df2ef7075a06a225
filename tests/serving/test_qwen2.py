"""Qwen2 in our engine against HF transformers on a tiny random checkpoint, and the model-family switch.

The tiny Qwen2 is shaped like Qwen2.5-Coder-1.5B where our kernels care: 12 query heads over 2 KV heads
(group 6), head_dim 128, tied embeddings. Its q/k/v biases are drawn at random: HF initialises biases to
zero, which would hide a bias that never reached our fused qkv projection. The folder holds a ChatML
tokenizer whose config names only <|im_end|> as eos, as the GGUF conversion of Qwen2.5-Coder does, while
<|endoftext|> ends generation too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ragsvc.serving.config import EngineConfig
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.models.llama import ModelConfig
from ragsvc.serving.sampling_params import SamplingParams
from tests.serving.test_model_exact import _check_against_hf, _prompts, _run_collecting_logits

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
END_TOKENS = ("<|endoftext|>", "<|im_end|>")


def _randomise_biases(model: torch.nn.Module, *, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.copy_(torch.randn(param.shape, generator=g) * 0.1)


def _chatml_tokenizer() -> Any:
    """A small byte-level BPE with Qwen's special tokens after the regular vocabulary, as in Qwen's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(["def add(a, b):\n    return a + b\n", "The capital of France is Paris."] * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe)
    tokenizer.add_special_tokens({"additional_special_tokens": [*END_TOKENS, "<|im_start|>"]})
    tokenizer.eos_token, tokenizer.pad_token = "<|im_end|>", "<|endoftext|>"
    tokenizer.chat_template = CHATML
    return tokenizer


@pytest.fixture(scope="module")
def tiny_qwen2_coder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = _chatml_tokenizer()
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=512,  # larger than the tokenizer, like Qwen's 151,936 rows for 151,665 tokens
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=12,
        num_key_value_heads=2,
        head_dim=128,  # type: ignore[call-arg]  # not a declared field, but Qwen2Attention reads it
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        initializer_range=0.1,  # HF's 0.02 gives near-flat logits: greedy then repeats one token everywhere
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    _randomise_biases(model, seed=1)
    model = model.float().eval()
    folder = tmp_path_factory.mktemp("tiny-qwen2-coder")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model


def _engine(folder: Path, **overrides: Any) -> LLMEngine:
    options: dict[str, Any] = dict(model=str(folder), dtype="float32", device="cpu", block_size=4, num_kv_blocks=256)
    options.update(overrides)
    return LLMEngine.from_config(EngineConfig(**options))


def test_the_folder_is_qwen_shaped(tiny_qwen2_coder) -> None:
    folder, hf_model = tiny_qwen2_coder
    assert hf_model.model.layers[0].self_attn.q_proj.bias.abs().min() > 0  # the biases are really there
    engine = _engine(folder)
    cfg = engine.runner.model.cfg
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.qkv_bias, cfg.o_proj_bias) == (12, 2, 128, True, False)
    assert engine.runner.model.lm_head.weight is engine.runner.model.embed_tokens.weight


@pytest.mark.parametrize("max_num_batched_tokens", [2048, 7])
def test_logits_match_hf_in_prefill_and_paged_decode(tiny_qwen2_coder, max_num_batched_tokens) -> None:
    """fp32 logits within 1e-3 of HF at every step: a mixed batch of prompts in one prefill (2048), or the
    same prompts in chunks of <= 7 tokens behind their cached context (7), then batched paged decodes."""
    folder, hf_model = tiny_qwen2_coder
    engine = _engine(folder, max_num_batched_tokens=max_num_batched_tokens)
    seen, _ = _run_collecting_logits(engine, _prompts([5, 17, 1, 33]), max_tokens=6)
    _check_against_hf(hf_model, seen)


def test_greedy_tokens_match_hf_generate(tiny_qwen2_coder) -> None:
    folder, hf_model = tiny_qwen2_coder
    prompts = _prompts([3, 12, 29])
    ours = _engine(folder).generate(prompts, SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))
    for prompt, out in zip(prompts, ours, strict=True):
        with torch.inference_mode():
            ref = hf_model.generate(
                torch.tensor([prompt]), max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0
            )
        assert out.output_token_ids == ref[0, len(prompt) :].tolist()


def test_bfloat16_kernels_track_fp32_hf(tiny_qwen2_coder) -> None:
    """The bf16 path (packed linears with bias, C++ prefill/decode kernels where the CPU has them) at the
    real model's head shape: logits within bf16 rounding of HF's fp32 logits."""
    folder, hf_model = tiny_qwen2_coder
    seen, _ = _run_collecting_logits(
        _engine(folder, dtype="bfloat16", max_num_batched_tokens=16), _prompts([9, 30]), max_tokens=4
    )
    for steps in seen.values():
        for context, ours in steps:
            with torch.no_grad():
                ref = hf_model(torch.tensor([context])).logits[0, -1]
            assert (ours - ref).abs().max() < 0.05 * ref.abs().max()


def _prompts_ending_on(hf_model: Any, ends: set[int]) -> dict[int, list[int]]:
    """For each end token, a random prompt whose greedy continuation reaches it after one or two other
    (non-end) tokens. A random model emits a given token at random, so search 4,096 prompts in one batched
    generate and keep, per end token, the prompt where it wins by the widest margin (robust to rounding
    differences between machines)."""
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, 290, (4096, 5), generator=g)  # (prompts, 5)
    with torch.inference_mode():
        out = hf_model.generate(
            prompts,
            max_new_tokens=3,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
            output_scores=True,
            return_dict_in_generate=True,
        )
    new = out.sequences[:, 5:]  # (prompts, 3)
    found: dict[int, list[int]] = {}
    for end in ends:
        margins = []
        for step in (1, 2):
            earlier_end = torch.isin(new[:, :step], torch.tensor(sorted(ends))).any(dim=1)  # (prompts,)
            top2 = out.scores[step].topk(2, dim=-1).values  # (prompts, 2)
            margins.append(torch.where((new[:, step] == end) & ~earlier_end, top2[:, 0] - top2[:, 1], -1.0))
        best = torch.stack(margins).amax(dim=0)  # (prompts,)
        assert best.max() > 0, f"no prompt of 4096 makes the tiny model emit {end} second or third"
        found[end] = prompts[int(best.argmax())].tolist()
    return found


def test_generation_stops_at_either_end_token(tiny_qwen2_coder) -> None:
    folder, hf_model = tiny_qwen2_coder
    engine = _engine(folder)
    assert engine.tokenizer is not None
    ends = {engine.tokenizer.convert_tokens_to_ids(t) for t in END_TOKENS}
    assert engine.eos_ids == ends  # the config names <|im_end|> only; <|endoftext|> comes from the tokenizer
    for end, prompt in _prompts_ending_on(hf_model, ends).items():
        [out] = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=16))
        assert out.finish_reason == "stop" and len(out.output_token_ids) in (2, 3) and out.output_token_ids[-1] == end
        assert "<|" not in out.text  # the end token is not text
        with torch.inference_mode():
            ref = hf_model.generate(
                torch.tensor([prompt]), max_new_tokens=16, do_sample=False, eos_token_id=sorted(ends), pad_token_id=0
            )
        assert out.output_token_ids == ref[0, len(prompt) :].tolist()


def test_chat_template_renders_chatml(tiny_qwen2_coder) -> None:
    folder, _ = tiny_qwen2_coder
    engine = _engine(folder)
    assert engine.tokenizer is not None
    text = engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": "def add"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\ndef add<|im_end|>\n<|im_start|>assistant\n"
    [out] = engine.generate([text], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    assert out.prompt_token_ids[0] == engine.tokenizer.convert_tokens_to_ids("<|im_start|>")  # one special token


# -- the family switch -------------------------------------------------------------------------------------


def test_llama_biases_follow_the_same_switch(tmp_path: Path) -> None:
    """Llama's attention_bias puts biases on q/k/v *and* o; mlp_bias on gate/up/down (Qwen2: q/k/v only)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        attention_bias=True,
        mlp_bias=True,
    )
    model = LlamaForCausalLM(config)
    _randomise_biases(model, seed=2)
    model = model.float().eval()
    model.save_pretrained(tmp_path)
    cfg = ModelConfig.from_hf(config)
    assert (cfg.qkv_bias, cfg.o_proj_bias, cfg.mlp_bias) == (True, True, True)
    seen, _ = _run_collecting_logits(_engine(tmp_path), _prompts([6, 13]), max_tokens=3)
    _check_against_hf(model, seen)


def _hf_config(model_type: str, **fields: Any) -> Any:
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **fields)


@pytest.mark.parametrize(
    ("model_type", "fields", "message"),
    [
        ("mistral", {}, "model type 'mistral'"),
        ("qwen3", {}, "model type 'qwen3'"),
        ("gemma", {}, "model type 'gemma'"),
        ("qwen2", {"architectures": ["Qwen2ForSequenceClassification"]}, "causal LMs only"),
        ("qwen2", {"use_sliding_window": True}, "sliding-window"),
        ("llama", {"hidden_act": "gelu"}, "hidden_act 'gelu'"),
    ],
)
def test_unsupported_families_are_refused_with_the_reason(model_type, fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_hf(_hf_config(model_type, **fields))


def test_engine_refuses_an_unsupported_folder(tmp_path: Path) -> None:
    _hf_config("mistral", architectures=["MistralForCausalLM"]).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not supported.*llama \\(LlamaForCausalLM\\), qwen2"):
        _engine(tmp_path)
