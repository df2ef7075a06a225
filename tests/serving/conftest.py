"""Serving fixtures: tiny random-weight Llama / Qwen2 checkpoints (exactness checks) and the real SmolLM2.

The tiny models are saved with transformers' own save_pretrained, so our loader reads exactly what a user's
HF folder holds; HF's model object stays around as the reference implementation.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

SMOLLM2_CACHE = Path(tempfile.gettempdir()) / "ragsvc-test-models"


def _tiny(tmp_path_factory: pytest.TempPathFactory, kind: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
    )
    if kind == "llama":
        config = LlamaConfig(
            **common, tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}
        )
        model = LlamaForCausalLM(config)
    else:
        config = Qwen2Config(
            **common, tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}
        )
        model = Qwen2ForCausalLM(config)
    model = model.float().eval()
    folder = tmp_path_factory.mktemp(f"tiny-{kind}")
    model.save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return _tiny(tmp_path_factory, "llama")


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory):
    return _tiny(tmp_path_factory, "qwen2")


@pytest.fixture(scope="session")
def tiny_llama_d64(tmp_path_factory):
    """A random-weight Llama with SmolLM2's head shape (head_dim 64, groups of 3), small enough to run fast."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512, hidden_size=384, intermediate_size=256, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    model = LlamaForCausalLM(config).float().eval()
    folder = tmp_path_factory.mktemp("tiny-llama-d64")
    model.save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The packaged SmolLM2 GGUF de-quantised once into a cache kept across test runs (first run ~25 s)."""
    from ragsvc.serving.loader import resolve_model_dir

    return resolve_model_dir("smollm2", cache_dir=str(SMOLLM2_CACHE))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Serving tests run single-threaded: batch-1 decode gains nothing from a second thread, and when the
    machine's cores are busy with other work, OpenMP threads spinning against each other made steps ~10x
    slower (measured here). Restored afterwards so other suites keep their setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
