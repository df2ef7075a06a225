"""Both apps as the fuzz tests build them, for the suite's fixtures and for the long schemathesis run.

`python -m tests.api.fuzz_servers STATE_FILE [--with-generator] [--tiny-model]` starts the API server and the model
server on free loopback ports over one temporary data folder, writes `{"api": url, "model": url, "token": admin key,
"agent": id, "session": id}` to STATE_FILE once both answer, and serves until SIGINT or SIGTERM. The README's
testing section runs the schemathesis CLI against those two URLs. With `--with-generator` the API answers,
chats and rewrites queries with the model server (its context then 512 tokens), and `tests/api/fuzz_hooks.py`
can point generated requests at the seeded collection and session so they get past the 404s. With
`--tiny-model` the model server serves `tiny_chat_model` instead of SmolLM2: the same tokenizer, engine and
routes, but a generated FLARE answer (up to 32 rounds of look-ahead) costs milliseconds instead of minutes on
two cores, so the pinned routes can be fuzzed at length.

Rate limiting is off on both: the fuzzer is one client sending as fast as it can, and a 429 would hide the
answer the route itself gives. The model server's context is short, which bounds what one generated request
can cost (n <= 16 sequences of <= 64 tokens).
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
from pathlib import Path

import httpx

from ragsvc.config import GeneratorSettings, Settings
from ragsvc.retrieval.vector_store import CATALOG_FILE
from ragsvc.serving.config import EngineConfig
from ragsvc.store.catalog import Catalog
from ragsvc.store.keys import mint_key
from tests.api.conftest import LiveServer, free_port, make_settings


def fuzz_settings(data_dir: Path) -> Settings:
    return make_settings(data_dir, rate_limit_per_s=0)


def add_admin_key(data_dir: Path) -> str:
    """An admin key for the fuzzer: without one, the first key it creates through POST /v1/keys turns
    authentication on and every later request would stop at 401."""
    catalog = Catalog(data_dir / CATALOG_FILE)
    try:
        new = mint_key("fuzzer", ["admin"])
        catalog.api_keys().add(new.record)
    finally:
        catalog.close()
    return new.token


def start_api(data_dir: Path, repo_root: Path, token: str, *,
              generator: GeneratorSettings | None = None) -> LiveServer:
    """The API server with a seeded collection ("fuzz", five documents), so reads have something to find."""
    from ragsvc.api.app import create_app

    settings = fuzz_settings(data_dir)
    app = create_app(settings if generator is None else settings.model_copy(update={"generator": generator}))
    app.state.repo_roots = (repo_root,)
    server = LiveServer(app, free_port())
    server.start()
    with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.post("/v1/collections", json={"name": "fuzz"}).status_code == 201
        docs = [{"id": f"d{i}", "text": f"document {i} about paged attention", "metadata": {"i": i}} for i in range(5)]
        assert c.post("/v1/collections/fuzz/documents", json={"documents": docs}).status_code == 201
    return server


def model_config(max_model_len: int = 64, model: str = "smollm2") -> EngineConfig:
    from tests.llm.conftest import MODEL_CACHE

    return EngineConfig(model=model, dtype="float32", cache_dir=str(MODEL_CACHE),
                        num_kv_blocks=max(80, max_model_len // 4), max_model_len=max_model_len, num_threads=1)


def tiny_chat_model(parent: Path) -> Path:
    """A random-weight Llama with SmolLM2's tokenizer, chat template and vocabulary, in `parent / "smollm2"`
    (so it is served under the name the hooks put into requests).

    For the suite's fuzz run: what is under test is the model server's validation and answers, which this
    model exercises through the same tokenizer, engine and routes, while a generated chat request without
    `max_tokens` (it runs to the end of the context) costs milliseconds instead of SmolLM2's seconds. Random
    weights also emit arbitrary tokens, byte-fallback pieces included, which a trained model seldom does."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ragsvc.serving.loader import resolve_model_dir
    from tests.llm.conftest import MODEL_CACHE

    source = resolve_model_dir("smollm2", cache_dir=str(MODEL_CACHE))
    real = json.loads((source / "config.json").read_text())
    folder = parent / "smollm2"
    folder.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (source / name).exists():
            shutil.copy(source / name, folder / name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=real["vocab_size"], hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=real["bos_token_id"], eos_token_id=real["eos_token_id"],
                         pad_token_id=real["pad_token_id"], tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    LlamaForCausalLM(config).float().eval().save_pretrained(folder)
    return folder


def seed_chat(url: str, token: str) -> dict[str, str]:
    """An agent and a session, whose ids the long run's hooks put into generated requests."""
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.post("/v1/agents", json={"id": "fuzz", "name": "Fuzz", "age": 30}).status_code == 201
        return {"agent": "fuzz", "session": c.post("/v1/agents/fuzz/sessions").json()["id"]}


def main(state_file: Path, *, with_generator: bool, tiny_model: bool = False) -> None:
    from ragsvc.api.model_app import create_model_app, serve_in_thread

    with tempfile.TemporaryDirectory(prefix="ragsvc-fuzz-") as tmp:
        data_dir, repo_root = Path(tmp) / "data", Path(tmp) / "roots"
        repo_root.mkdir()
        token = add_admin_key(data_dir)
        # the same data folder: the model server reads the keys file the catalog writes beside itself
        model = str(tiny_chat_model(Path(tmp) / "tiny")) if tiny_model else "smollm2"
        config = model_config(max_model_len=512 if with_generator else 64, model=model)
        with serve_in_thread(create_model_app(config, settings=fuzz_settings(data_dir))) as model_url:
            generator = GeneratorSettings(url=f"{model_url}/v1", api_key=token) if with_generator else None
            api = start_api(data_dir, repo_root, token, generator=generator)
            state = {"api": api.url, "model": model_url, "token": token, **seed_chat(api.url, token)}
            state_file.write_text(json.dumps(state))
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            stop.wait()
            api.stop()


if __name__ == "__main__":
    flags = sys.argv[2:]
    main(Path(sys.argv[1]), with_generator="--with-generator" in flags, tiny_model="--tiny-model" in flags)
