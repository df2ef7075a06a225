"""LLM client fixtures: one fp32 SmolLM2 engine driven in-process, and one behind a real uvicorn (127.0.0.1).

fp32 so that a request's greedy tokens do not depend on what it is batched with (bf16 matmuls can round
differently at different batch sizes), which lets the tests compare clients token for token.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

# the same cache the serving tests use, so the GGUF is de-quantised once per machine
MODEL_CACHE = Path(tempfile.gettempdir()) / "ragsvc-test-models"
NUM_BLOCKS = 64  # x 16 tokens = 1,024 = max_model_len


def engine_config():
    from ragsvc.serving.config import EngineConfig

    # one torch thread: on a shared 2-core machine two spinning OpenMP threads were ~20x slower per step
    return EngineConfig(model="smollm2", dtype="float32", cache_dir=str(MODEL_CACHE), num_kv_blocks=NUM_BLOCKS,
                        num_threads=1)


@pytest.fixture(scope="session")
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def engine(_restore_threads):
    from ragsvc.serving.engine import LLMEngine

    return LLMEngine.from_config(engine_config())


@pytest.fixture(scope="session")
def in_process(engine):
    from ragsvc.llm.in_process import InProcessGenerator

    with InProcessGenerator(engine) as gen:
        yield gen


@pytest.fixture(scope="session")
def server_url(_restore_threads):
    from ragsvc.api.model_app import create_model_app, serve_in_thread

    app = create_model_app(engine_config())
    with serve_in_thread(app) as url:
        yield url
