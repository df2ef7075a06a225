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

from ragsvc.embed.batching import length_sorted_batches, restore_order
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
    with torch.inference_mode(False), torch.no_grad():
        converted = ov.convert_model(_Hidden(), example_input={name: example[name] for name in INPUTS})
    return save_ir(converted, target)


def save_ir(model: Any, target: Path) -> Path:
    """`model` saved as `target`/model.xml through a private temporary folder renamed into place, so a reader
    never sees half an IR; when another process renamed the same model first, its copy is kept."""
    import openvino as ov

    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ov.save_model(model, tmp / "model.xml", compress_to_fp16=False)
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished the same model first
        shutil.rmtree(tmp, ignore_errors=True)
    return target / "model.xml"


class OpenVinoEncoder:
    """Texts -> (n, dim) float32 rows, L2-normalised: the IR's hidden states pooled as the model pools them.

    Texts are tokenised once, by a private copy of the model's fast tokenizer set to truncate as the model
    does and never to pad: the token counts that sort a request into batches and the batches' inputs come
    from that one pass (padding is numpy's), and no other thread's tokenizer call can change its settings."""

    def __init__(self, model: SentenceTransformer, xml: Path, *, bf16: bool, num_threads: int,
                 int8: bool = False) -> None:
        """`xml` is the float IR (`export`) or, with `int8`, its quantised copy (`openvino_int8.quantize`): the
        quantised layers run in int8, the rest in bfloat16 where `bf16` else float32."""
        self._mode = _pooling_mode(model)
        self._normalize = any(type(m).__name__ == "Normalize" for m in model)
        self._tokenizer = private_tokenizer(model.tokenizer, int(model.max_seq_length or 512))
        self._pad_id = int(model.tokenizer.pad_token_id or 0)
        hint = "bf16" if bf16 else "f32"
        self.precision = "int8" if int8 else "bfloat16" if bf16 else "float32"
        # No pinning: OpenVINO pins a compiled model's threads to cores counted from the first, so the lanes'
        # one-thread models all ran on core 0 (two lanes on 2 cores: 1.0 core busy, 1.75x with it off).
        self._compiled = shared_core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                                   "INFERENCE_NUM_THREADS": num_threads,
                                                                   "ENABLE_CPU_PINNING": False})
        self._lock = threading.Lock()  # one infer request per compiled model: calls must not overlap

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.run(self.tokenize(texts))

    def tokenize(self, texts: Sequence[str]) -> list[Tokens]:
        """Each text's (input ids, token type ids), special tokens added, truncated, unpadded."""
        return [(e.ids, e.type_ids) for e in self._tokenizer.encode_batch(list(texts))]

    def encode_sorted(self, texts: Sequence[str], *, batch_size: int, max_batch_tokens: int | None) -> np.ndarray:
        """All of `texts` in batches cut from their order by token count (one tokenisation), input order kept."""
        tokens = self.tokenize(texts)
        batches = length_sorted_batches([len(ids) for ids, _ in tokens], batch_size=batch_size,
                                        max_batch_tokens=max_batch_tokens)
        return restore_order(batches, [self.run([tokens[i] for i in rows]) for rows in batches], len(texts))

    def run(self, tokens: Sequence[Tokens]) -> np.ndarray:
        """One batch of tokenised texts, padded to its longest, through the model; pooled, normalised rows."""
        inputs = padded_inputs(tokens, pad_id=self._pad_id)
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


Tokens = tuple[list[int], list[int]]
"""One text's input ids and token type ids, special tokens included, unpadded."""


def private_tokenizer(tokenizer: Any, max_length: int) -> Any:
    """A copy of a transformers fast tokenizer's backend that truncates to `max_length` (special tokens
    included, as the transformers call with truncation=True does) and never pads. A transformers tokenizer
    sets padding and truncation on its backend at every call, so a shared one is not safe across threads."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer; only those are converted")
    own = Tokenizer.from_str(backend.to_str())
    own.no_padding()
    own.enable_truncation(max_length)
    return own


_CORE_LOCK = threading.Lock()
_CORE: list[Any] = []


def shared_core() -> Any:
    """The process's one OpenVINO Core, created on first use and never freed.

    OpenVINO's CPU plugin installs an alternate signal stack on the thread that creates it and unmaps that stack
    when it is destroyed, restoring the thread's previous one only when the destroying thread is the creating
    one and nothing replaced the stack since. A Core a model (a lane's copy, a compared candidate) brings and
    drops on some other thread leaves the creating thread with a signal stack that no longer exists, and the
    next signal that thread takes (a server's SIGTERM) kills the process with a segmentation fault instead
    of running the handler. One Core for every compiled model keeps one plugin alive for the process's life.
    """
    with _CORE_LOCK:
        if not _CORE:
            import openvino as ov

            _CORE.append(ov.Core())
        return _CORE[0]


def padded_inputs(tokens: Sequence[Tokens], *, pad_id: int) -> dict[str, np.ndarray]:
    """The model's three int64 inputs (batch, longest): ids padded with `pad_id`, mask and type ids with 0."""
    width = max((len(ids) for ids, _ in tokens), default=0)
    out = {name: np.zeros((len(tokens), width), dtype=np.int64) for name in INPUTS}
    out["input_ids"].fill(pad_id)
    for row, (ids, types) in enumerate(tokens):
        out["input_ids"][row, : len(ids)] = ids
        out["attention_mask"][row, : len(ids)] = 1
        out["token_type_ids"][row, : len(types)] = types
    return out


@dataclass(frozen=True, slots=True)
class BackendChoice:
    backend: Literal["torch", "openvino"]
    reason: str
    cosine_mean: float = 1.0
    cosine_min: float = 1.0
    speedup: float = 1.0
    """Over the torch path it replaces, on the check sample."""
    int8: bool = False
    """The OpenVINO model is the int8 quantised one (it agreed with float32 on the check sample)."""
    query_backend: Literal["torch", "openvino"] = "torch"
    """What embeds queries, measured apart (`QUERY_TEXTS`, one at a time as a search sends them): for a short
    text alone a framework's per-call cost outweighs the arithmetic, so the two roles can differ. On a Zen 3
    OpenVINO took 8.5 ms a query against torch's 20, while batches of documents ran no faster (0.85-1.03x)."""
    query_speedup: float = 1.0
    """Over the torch path, on those queries."""


QUERY_TEXTS: tuple[str, ...] = (
    "what keeps the KV cache?",
    "paged attention",
    "how are dense and lexical rankings fused?",
    "median survival months after treatment",
    "merge two sorted lists in python",
    "Katze auf dem Fensterbrett",
)
"""Search-shaped texts for the query half of the backend choice: short, varied, each embedded on its own."""


def choose_backend(setting: BackendSetting, *, reference: Encode, torch_path: Encode, candidate: Encode | None,
                   unavailable: str | None, repeats: int = 3, int8: bool = False) -> BackendChoice:
    """OpenVINO when it agrees with the float32 `reference` on the check sample and (for "auto") beats
    `torch_path` by MIN_SPEEDUP, for documents (the check sample as a batch) and for queries (`QUERY_TEXTS`
    one at a time) each; else torch, with the reason. `candidate` is None when it could not be built
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
    speedup = best_seconds(torch_path, texts, repeats) / max(best_seconds(candidate, texts, repeats), 1e-9)
    query_speedup = (best_seconds(_one_at_a_time(torch_path), list(QUERY_TEXTS), repeats)
                     / max(best_seconds(_one_at_a_time(candidate), list(QUERY_TEXTS), repeats), 1e-9))
    measured = f"{speedup:.2f}x the torch path on documents, {query_speedup:.2f}x on single queries"
    documents = setting == "openvino" or speedup >= MIN_SPEEDUP
    queries = setting == "openvino" or query_speedup >= MIN_SPEEDUP
    if not documents and not queries:
        return BackendChoice("torch", f"OpenVINO is not faster ({measured}; needs {MIN_SPEEDUP}x)",
                             agree.cosine_mean, agree.cosine_min, speedup, query_speedup=query_speedup)
    roles = "documents and queries" if documents and queries else "documents" if documents else "queries"
    return BackendChoice("openvino" if documents else "torch",
                         f"OpenVINO{' int8' if int8 else ''} for {roles}: {measured}, cosine mean "
                         f"{agree.cosine_mean:.4f}, min {agree.cosine_min:.4f}", agree.cosine_mean,
                         agree.cosine_min, speedup, int8, query_backend="openvino" if queries else "torch",
                         query_speedup=query_speedup)


def _one_at_a_time(encode: Encode) -> Encode:
    return lambda texts: np.concatenate([encode([text]) for text in texts])


def best_seconds(encode: Encode, texts: list[str], repeats: int) -> float:
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
    return choice if {choice.backend, choice.query_backend} <= {"torch", "openvino"} else None


def save_backend_choice(path: Path, choice: BackendChoice) -> None:
    save_measured_choice(path, asdict(choice), what="backend")
