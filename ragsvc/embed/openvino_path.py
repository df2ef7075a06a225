"""An OpenVINO copy of a sentence-transformers model, built locally from its folder, checked before use.

OpenVINO's CPU runtime fuses a BERT encoder's attention and feed-forward blocks and, on CPUs with bf16
instructions (avx512_bf16, AMX), runs them in bfloat16 with float32 accumulation; on some CPUs that beats
torch's bf16 autocast. Whether it does is measured where it runs (`choose_backend`), never assumed.

Why not sentence-transformers' own `backend="openvino"`: it needs optimum-intel, which pins transformers
and torch to other versions than the service runs (pip would replace both). So the transformer is converted
here with `openvino.convert_model` straight from the loaded torch module (no ONNX file, no download), saved
as IR beside the C++ kernels under a key of model folder, OpenVINO and torch versions (written to a
temporary folder, then renamed), and pooled and normalised in numpy as the model's own Pooling and
Normalize modules do. Only models of that shape (Transformer, Pooling by mean or CLS, optional Normalize)
are converted; for any other the reason is given and torch is used.

The converted path must agree with torch float32 on the fixed sample (`precision.agreement`: mean cosine
>= 0.99, min >= 0.98) and, when chosen automatically, be `MIN_SPEEDUP` faster than the torch path it would
replace. It computes the same function, so the embedder id does not change.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ragsvc.embed.precision import CHECK_TEXTS, MIN_SPEEDUP, agreement, save_measured_choice

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
BackendSetting = Literal["auto", "torch", "openvino"]
Encode = Callable[[Sequence[str]], np.ndarray]


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def unsupported_reason(model: SentenceTransformer) -> str | None:
    """None when the model is Transformer -> Pooling (mean or CLS) -> optional Normalize, else why not."""
    names = [type(m).__name__ for m in model]
    if names[:2] != ["Transformer", "Pooling"] or any(n != "Normalize" for n in names[2:]):
        return f"modules {names} are not Transformer, Pooling[, Normalize]"
    mode = _pooling_mode(model)
    if mode not in ("mean", "cls"):
        return f"pooling {mode!r} is not mean or cls"
    return None


def _pooling_mode(model: SentenceTransformer) -> str:
    pooling: Any = model[1]
    config: dict[str, Any] = pooling.get_config_dict()
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        return mode
    flags = {"mean": config.get("pooling_mode_mean_tokens"), "cls": config.get("pooling_mode_cls_token")}
    chosen = [name for name, on in flags.items() if on]
    return chosen[0] if len(chosen) == 1 else "other"


def export(model: SentenceTransformer, *, model_dir: Path, cache_dir: Path) -> Path:
    """The model's transformer as OpenVINO IR (model.xml), converted once per key and reused after."""
    import openvino as ov
    import torch

    stat = model_dir.stat()
    key = hashlib.sha256("\x00".join([str(FORMAT_VERSION), str(model_dir.resolve()), str(stat.st_mtime_ns),
                                      ov.__version__, str(torch.__version__)]).encode()).hexdigest()[:16]
    target = cache_dir / f"openvino-{key}"
    if (target / "model.xml").is_file():
        return target / "model.xml"
    transformer: Any = model[0].auto_model
    transformer.eval()

    class _Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.transformer(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state  # (batch, tokens, dim)

    example = model.tokenizer(["an example", "a second, longer example text"], padding=True, return_tensors="pt")
    if "token_type_ids" not in example:
        raise ValueError("the tokenizer gives no token_type_ids; only BERT-style encoders are converted")
    tmp = cache_dir / f".openvino-{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with torch.inference_mode(False), torch.no_grad():
        converted = ov.convert_model(_Hidden(), example_input={name: example[name] for name in INPUTS})
    ov.save_model(converted, tmp / "model.xml", compress_to_fp16=False)
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished the same conversion first
        shutil.rmtree(tmp, ignore_errors=True)
    return target / "model.xml"


class OpenVinoEncoder:
    """Texts -> (n, dim) float32 rows, L2-normalised: the IR's hidden states pooled as the model pools them."""

    def __init__(self, model: SentenceTransformer, xml: Path, *, bf16: bool, num_threads: int) -> None:
        import openvino as ov

        self._model = model
        self._mode = _pooling_mode(model)
        self._normalize = any(type(m).__name__ == "Normalize" for m in model)
        hint = "bf16" if bf16 else "f32"
        self.precision = "bfloat16" if bf16 else "float32"
        self._compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                                   "INFERENCE_NUM_THREADS": num_threads})
        self._lock = threading.Lock()  # one infer request per compiled model: calls must not overlap

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        features = self._model.tokenizer(list(texts), padding=True, truncation=True,
                                         max_length=self._model.max_seq_length, return_tensors="np")
        inputs = {name: np.asarray(features[name], dtype=np.int64) for name in INPUTS}
        with self._lock:
            hidden = np.asarray(self._compiled(inputs)[0], dtype=np.float32)  # (batch, tokens, dim)
        if self._mode == "cls":
            pooled = hidden[:, 0]  # (batch, dim)
        else:
            mask = inputs["attention_mask"][..., None].astype(np.float32)  # (batch, tokens, 1)
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)  # (batch, dim)
        if self._normalize:
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(pooled, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class BackendChoice:
    backend: Literal["torch", "openvino"]
    reason: str
    cosine_mean: float = 1.0
    cosine_min: float = 1.0
    speedup: float = 1.0
    """Over the torch path it replaces, on the check sample."""


def choose_backend(setting: BackendSetting, *, reference: Encode, torch_path: Encode, candidate: Encode | None,
                   unavailable: str | None, repeats: int = 3) -> BackendChoice:
    """OpenVINO when it agrees with the float32 `reference` on the check sample and (for "auto") beats
    `torch_path` by MIN_SPEEDUP; else torch, with the reason. `candidate` is None when it could not be built
    (`unavailable` says why)."""
    if setting == "torch":
        return BackendChoice("torch", "torch was asked for")
    if candidate is None:
        return BackendChoice("torch", f"OpenVINO not used: {unavailable}")
    texts = list(CHECK_TEXTS)
    agree = agreement(reference(texts), candidate(texts))
    if not agree.passed:
        return BackendChoice("torch", f"OpenVINO disagrees with float32 (cosine mean {agree.cosine_mean:.4f}, min "
                                      f"{agree.cosine_min:.4f})", agree.cosine_mean, agree.cosine_min)
    speedup = _best_seconds(torch_path, texts, repeats) / max(_best_seconds(candidate, texts, repeats), 1e-9)
    if setting == "auto" and speedup < MIN_SPEEDUP:
        return BackendChoice("torch", f"OpenVINO is not faster ({speedup:.2f}x the torch path; needs {MIN_SPEEDUP}x)",
                             agree.cosine_mean, agree.cosine_min, speedup)
    return BackendChoice("openvino", f"OpenVINO: {speedup:.2f}x the torch path, cosine mean {agree.cosine_mean:.4f}, "
                                     f"min {agree.cosine_min:.4f}", agree.cosine_mean, agree.cosine_min, speedup)


def _best_seconds(encode: Encode, texts: list[str], repeats: int) -> float:
    encode(texts)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        encode(texts)
        best = min(best, time.perf_counter() - start)
    return best


def load_backend_choice(path: Path) -> BackendChoice | None:
    try:
        choice = BackendChoice(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return choice if choice.backend in ("torch", "openvino") else None


def save_backend_choice(path: Path, choice: BackendChoice) -> None:
    save_measured_choice(path, asdict(choice), what="backend")
