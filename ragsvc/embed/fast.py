"""The fast encode path: length-bucketed batches and a measured reduced precision, same vectors within a bound.

`SentenceTransformerEmbedder` uses this path when given a `precision` or `sort_by_length` (the settings'
embedder does); the model folder, tokenizer, id, prefixes and chunking stay the same. Its forward passes
differ from sentence-transformers' `encode` in two ways, each optional:

- batches are cut from the texts sorted by token count (`batching.py`), so little compute goes to padding;
- the model runs under autocast in the precision `precision.py` chose: bfloat16 on a CPU where it measured
  faster, float16 or bfloat16 on CUDA, float32 otherwise (a BERT model on a CPU: its lean forward in that
  precision, `lean_bert.py`, once checked). Pooling and normalisation run in float32.

The embedder id does not change with the precision or the batching. Both are ways of computing the same
function: a path is used only after its vectors agreed with float32 on a fixed sample (mean cosine >= 0.99,
min >= 0.98), which is well inside what nearest-neighbour search tolerates, so vectors stored in float32 and
vectors added later in bfloat16 (or the other way round) search together, the embedding cache serves both,
and existing collections keep working. (The same holds for the `dtype` option of the plain embedder.) A
change that alters the function itself — another model, width or document prefix — changes the id.
"""

from __future__ import annotations

import copy
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ragsvc.embed import traced_forward
from ragsvc.embed.batching import length_sorted_batches, restore_order
from ragsvc.embed.bert_folder import BertFolderModel, folder_files, read_spec
from ragsvc.embed.lean_bert import LeanBert, LeanPrecision, LeanSetting, lean_encoder
from ragsvc.embed.openvino_int8 import QuantizeSetting, nncf_available, prefer_int8
from ragsvc.embed.openvino_int8 import quantize as quantize_model
from ragsvc.embed.openvino_path import (
    BackendChoice,
    BackendSetting,
    OpenVinoEncoder,
    choose_backend,
    export,
    load_backend_choice,
    openvino_available,
    private_tokenizer,
    save_backend_choice,
    unsupported_reason,
)
from ragsvc.embed.precision import (
    CHECK_TEXTS,
    Precision,
    PrecisionChoice,
    PrecisionSetting,
    choice_key,
    choose_precision,
    load_choice,
    save_choice,
    save_measured_choice,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    Model = SentenceTransformer | BertFolderModel

logger = logging.getLogger(__name__)

BACKEND_CHOICE_VERSION = 2
"""In the backend choice's cache key: 2 measures queries apart from documents."""
TIMED_REPEATS = 3
"""The precision check times each path this many times and keeps the best (a shared machine adds noise)."""
LEAN_VERSION = 7
"""In the lean check's cache key: a change to `lean_bert.py` or `traced_forward.py` checks again."""
LEAN_TOLERANCE = 1e-4
"""Largest element difference of normalised vectors the lean forward may show against transformers' (float32
sums in another order give ~1e-7)."""
LEAN_BF16_MIN_COSINE = 0.999
"""Least cosine of each lean bfloat16 vector to the model's own float32 vector on the check sample. bfloat16
rounding leaves MiniLM's at >= 0.99996 (transformers under autocast: the same); a wrong weight, layout or mask
falls far below, while the precision check's own bar (`precision.MIN_COSINE`) would let a slight error pass."""
LEAN_CHECK_TEXTS = CHECK_TEXTS[:-1]
"""What the lean forward is checked on at every load: the check sample short of its 400-token text, which
only tests truncation (the tokenizer's, shared by both forwards) and would double the check's cost."""
CUDA_MIN_BATCH = 256
"""Rows per forward pass on a GPU at least: a batch of 32 short texts leaves most of one idle."""


def device_plan(device: str, batch_size: int, *, hardware: str | None = None) -> tuple[tuple[Precision, ...], int]:
    """The reduced precisions worth measuring on `device` and the rows per batch there: on CUDA float16 and
    bfloat16 (tensor cores take both) in batches of at least CUDA_MIN_BATCH; on a CPU bfloat16 where it has
    bfloat16 instructions (`native_bf16` of `hardware`, this machine's when None; float16 autocast is slow on
    CPUs) in the configured batch size. Float32 is always the fallback."""
    if device.startswith("cuda"):
        return ("float16", "bfloat16"), max(batch_size, CUDA_MIN_BATCH)
    return (("bfloat16",) if native_bf16(_hardware() if hardware is None else hardware) else ()), batch_size


BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # x86 flags; "bf16" is the Arm feature name


def cpu_has_native_bf16() -> bool:
    """`native_bf16` of this machine's CPU."""
    return native_bf16(_hardware())


def cpu_has_amx() -> bool:
    """Whether this machine's CPU has AMX's bfloat16 tiles, where the lean forward's weights are packed for
    oneDNN (`packed_linear.py`)."""
    lines = [line for line in _hardware().splitlines() if line.startswith("flags")]
    return any("amx_bf16" in line.split() for line in lines)


def native_bf16(hardware: str) -> bool:
    """Whether the CPU that `_hardware` describes computes in bfloat16 natively; True when its flags are
    unknown. Without such instructions torch's bfloat16 autocast converts around every operation and runs
    far slower than float32 (MiniLM on a Zen 3: 83 s against 6 s for the same 48 texts), so the automatic
    choice does not spend a server start measuring it."""
    lines = [line for line in hardware.splitlines() if line.startswith(("flags", "Features"))]
    return not lines or any(BF16_FLAGS & set(line.split()) for line in lines)


@dataclass(frozen=True, slots=True)
class FastPath:
    """How the fast path runs a model: the checked precision and how batches are cut; and, when OpenVINO
    measured faster here (`openvino_path.py`), the converted model that runs the batches instead of torch."""

    choice: PrecisionChoice
    batch_size: int
    max_seq_length: int
    sort_by_length: bool = True
    max_batch_tokens: int | None = None
    runner: OpenVinoEncoder | None = None
    backend_choice: BackendChoice | None = None
    query_runner: OpenVinoEncoder | None = None
    """What runs queries' batches where OpenVINO measured faster for them (`BackendChoice.query_backend`)."""
    lean: LeanBert | None = None
    """Torch batches run through this forward (in the chosen precision) instead of transformers' (`lean_bert.py`,
    `with_lean`)."""

    def for_queries(self) -> FastPath:
        """This path as queries take it: their own runner (None: torch)."""
        return replace(self, runner=self.query_runner)

    @property
    def precision(self) -> Precision:
        return self.choice.precision

    @property
    def label(self) -> str:
        """What runs the batches: the torch precision (`-lean`, `-lean-traced` or `-lean-traced-packed` for the
        lean forward), or `openvino-<precision>`."""
        if self.runner is not None:
            return f"openvino-{self.runner.precision}"
        if self.lean is None:
            return self.precision
        traced = self.lean.traced
        if traced is None:
            return f"{self.precision}-lean"
        return f"{self.precision}-lean-traced{'-packed' if getattr(traced, 'packed_weights', False) else ''}"


def encode(model: Model, texts: Sequence[str], path: FastPath, *,
           precision: Precision | None = None) -> np.ndarray:
    """(len(texts), dim) float32, rows L2-normalised, in `precision` (default: the path's chosen one)."""
    if not texts:
        return np.zeros((0, model.get_embedding_dimension() or 0), dtype=np.float32)
    if path.runner is not None and precision is None and path.sort_by_length:  # tokenises once for both
        return path.runner.encode_sorted(texts, batch_size=path.batch_size, max_batch_tokens=path.max_batch_tokens)
    if path.sort_by_length:
        batches = length_sorted_batches(token_counts(model, texts, path.max_seq_length),
                                        batch_size=path.batch_size, max_batch_tokens=path.max_batch_tokens)
    else:
        batches = [np.arange(s, min(s + path.batch_size, len(texts))) for s in range(0, len(texts), path.batch_size)]
    if path.runner is not None and precision is None:
        outputs = [path.runner([texts[i] for i in rows]) for rows in batches]
    else:  # an explicit precision is the model's own forward in it: the reference every other path is checked by
        lean = path.lean if precision is None and path.lean is not None and path.lean.precision == path.precision \
            else None
        outputs = [_forward(model, [texts[i] for i in rows], precision or path.precision, lean) for rows in batches]
    return restore_order(batches, outputs, len(texts))  # (n, dim)


def token_counts(model: Model, texts: Sequence[str], max_seq_length: int) -> list[int]:
    """Tokens each text becomes in the model's input (special tokens in, truncated as the model truncates)."""
    if isinstance(model, BertFolderModel):
        return model.token_counts(texts)
    encoded = model.tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_seq_length,
                              verbose=False)
    return [len(ids) for ids in encoded["input_ids"]]


def _forward(model: Model, texts: list[str], precision: Precision,
             lean: LeanBert | None = None) -> np.ndarray:
    """One batch through the model under autocast (float32: none), or through `lean` (which computes in
    `precision` itself); pooled output normalised in float32."""
    import torch

    features = model.preprocess(texts)
    if model.device.type != "cpu":
        features = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)
    if lean is not None:
        with torch.inference_mode():
            pooled = lean(features["input_ids"], features["attention_mask"], features.get("token_type_ids"))
    else:
        with torch.inference_mode(), torch.autocast(model.device.type, dtype=dtype, enabled=dtype is not None):
            pooled = model(features)["sentence_embedding"]  # (batch, dim)
    vectors = torch.nn.functional.normalize(pooled.float(), p=2, dim=1)
    return np.ascontiguousarray(vectors.cpu().numpy(), dtype=np.float32)


def choose(model: Model, setting: PrecisionSetting, *, model_dir: Path, batch_size: int,
           max_seq_length: int, choice_dir: Path | None) -> PrecisionChoice:
    """The cached automatic choice when there is one, else a measured one (cached when `choice_dir` is set)."""
    device = model.device.type
    candidates, _ = device_plan(device, batch_size)
    cache = None
    if setting == "auto" and choice_dir is not None:
        cache = _choice_file(model_dir, device, batch_size, choice_dir)
        cached = load_choice(cache)
        if cached is not None:
            logger.info("embedder precision %s (cached: %s)", cached.precision, cached.reason)
            return cached
    probe = FastPath(PrecisionChoice("float32", "measuring"), batch_size, max_seq_length)

    def measure(precision: Precision) -> tuple[np.ndarray, float]:
        texts = list(CHECK_TEXTS)
        vectors = encode(model, texts, probe, precision=precision)  # also the warm-up pass
        best = float("inf")
        for _ in range(TIMED_REPEATS):
            start = time.perf_counter()
            encode(model, texts, probe, precision=precision)
            best = min(best, time.perf_counter() - start)
        return vectors, best

    if setting not in ("auto", "float32") and device == "cpu" and setting not in candidates:
        logger.warning("embedder precision %s asked for on a CPU without bfloat16 instructions: torch emulates it, "
                       "several times slower than float32", setting)
    if setting == "auto" and not candidates:  # nothing could be faster: no need to measure float32 either
        choice = PrecisionChoice("float32", "this CPU has no bfloat16 instructions (avx512_bf16, amx_bf16 or "
                                            "Arm bf16), so a reduced precision would be emulated, slower")
        logger.info("embedder precision float32: %s", choice.reason)
    else:
        choice = choose_precision(setting, candidates, measure)
    if cache is not None:
        save_choice(cache, choice)
    return choice


def _choice_file(model_dir: Path, device: str, batch_size: int, choice_dir: Path) -> Path:
    """Where the automatic precision choice for this model, device, CPU, torch and thread count is kept."""
    import torch

    key = choice_key(model_dir=model_dir, device=device, cpu=_hardware(), torch_version=str(torch.__version__),
                     batch_size=batch_size, threads=torch.get_num_threads())
    return choice_dir / f"precision-{key}.json"


def cached_choice(model_dir: Path, *, batch_size: int, choice_dir: Path | None) -> PrecisionChoice | None:
    """The automatic CPU precision choice `choose` made for this model on this machine before (None: not made
    yet, or no `choice_dir`), read without loading the model."""
    return None if choice_dir is None else load_choice(_choice_file(model_dir, "cpu", batch_size, choice_dir))


def with_lean(model: SentenceTransformer, path: FastPath, setting: LeanSetting = "traced", *,
              model_dir: Path | None = None, choice_dir: Path | None = None) -> FastPath:
    """`path` with `lean_bert.LeanBert` running its torch batches in the path's precision (float32, or
    bfloat16 on a CPU), where the model qualifies and the lean forward agrees with the model's own on the
    check sample (float32: within LEAN_TOLERANCE of its float32 forward; bfloat16: each vector at cosine
    LEAN_BF16_MIN_COSINE or more to it); else `path` as it is, the reason logged. "traced" also traces it
    (`traced_forward.py`) where that agrees too.

    The checks cost about a second on a slow CPU, so a pass is remembered for `model_dir` in this process (a
    server's embedding lanes are copies of one model) and, with `choice_dir`, on this machine like the
    precision choice (a server restarts in seconds); a failure is never remembered, so it is checked again."""
    import torch

    precision = path.precision
    if setting == "off" or precision not in ("float32", "bfloat16") or (
            path.runner is not None and path.query_runner is not None):
        return path
    lean, why = lean_encoder(model, "bfloat16" if precision == "bfloat16" else "float32")
    if lean is None:
        logger.info("embedder forward: transformers' own (%s)", why)
        return path
    key = None if model_dir is None else (str(model_dir), setting, precision)
    cache = None
    if model_dir is not None and choice_dir is not None:
        digest = choice_key(model_dir=model_dir, device=f"lean-v{LEAN_VERSION}-{setting}-{precision}",
                            cpu=_hardware(), torch_version=str(torch.__version__), batch_size=0, threads=0)
        cache = choice_dir / f"lean-{digest}.json"
    if key in _LEAN_PASSED or (cache is not None and cache.exists()):
        if setting == "traced":
            lean.traced = traced_forward.trace(lean, (), pack_weights=_packs(lean))
        if key is not None:
            _LEAN_PASSED.add(key)
        if model_dir is not None and choice_dir is not None:
            _record_folder(model, model_dir, replace(path, lean=lean), setting, choice_dir)
        return replace(path, lean=lean)
    texts = list(LEAN_CHECK_TEXTS)
    own = encode(model, texts, path, precision="float32")
    mine = encode(model, texts, replace(path, runner=None, query_runner=None, lean=lean))
    batches = _check_batches(model, texts)
    padded = _padded_vectors(lean, batches[0])
    if precision == "float32":
        worst = float(max(np.abs(own - mine).max(), np.abs(own - padded).max()))
        failed = worst > LEAN_TOLERANCE
        measured, allowed = f"differed by {worst:.2g}", f"allowed {LEAN_TOLERANCE:.0e}"
    else:
        worst = float(min(np.einsum("nd,nd->n", own, vectors).min() for vectors in (mine, padded)))  # unit rows
        failed = not worst >= LEAN_BF16_MIN_COSINE
        measured, allowed = f"reached cosine {worst:.5f} to float32", f"needs {LEAN_BF16_MIN_COSINE}"
    if failed:
        logger.warning("embedder forward: transformers' own; the lean %s forward %s on the check sample (%s)",
                       precision, measured, allowed)
        return path
    logger.info("embedder forward: lean %s (%s; %s on the check sample)", precision, why, measured)
    if setting == "traced":
        pack = _packs(lean)
        lean.traced = traced_forward.trace(lean, batches, pack_weights=pack)
        if lean.traced is None or pack and not lean.traced.packed_weights:
            return replace(path, lean=lean)  # not remembered: a start that finds it passed would skip checks
    if key is not None:
        _LEAN_PASSED.add(key)
    if cache is not None:
        save_measured_choice(cache, {"setting": setting, "precision": precision, "measured": worst},
                             what="lean forward")
    if model_dir is not None and choice_dir is not None:
        _record_folder(model, model_dir, replace(path, lean=lean), setting, choice_dir)
    return replace(path, lean=lean)


def checked_folder(model_dir: Path, setting: LeanSetting, *, choice_dir: Path | None,
                   precision: LeanPrecision = "float32") -> BertFolderModel | None:
    """The model folder loaded without sentence-transformers (`bert_folder.py`), its lean forward in
    `precision` (traced for "traced"), where that loading agreed with sentence-transformers' in that precision
    on this machine (`_record_folder`); None where it has not been checked here, does not qualify or fails to
    load (the caller loads the ordinary way, which also runs the check)."""
    if setting == "off" or choice_dir is None or not _folder_record(model_dir, setting, precision,
                                                                    choice_dir).exists():
        return None
    folder, why = _load_folder(model_dir, precision)
    if folder is None:
        logger.warning("embedder folder %s not loaded directly (%s); loading it through sentence-transformers",
                       model_dir, why)
        return None
    if setting == "traced":
        folder.lean.traced = traced_forward.trace(folder.lean, (), pack_weights=_packs(folder.lean))
    _LEAN_PASSED.add((str(model_dir), setting, precision))
    logger.info("embedder loaded without sentence-transformers (%s, %s; checked against it on this machine)",
                why, precision)
    return folder


def _load_folder(model_dir: Path, precision: LeanPrecision) -> tuple[BertFolderModel | None, str]:
    """The folder loaded directly, or None and why not (a folder this loader cannot read, or any failure in
    reading it, keeps the ordinary loading)."""
    try:
        spec, why = read_spec(model_dir)
        return (None if spec is None else BertFolderModel(model_dir, spec, precision)), why
    except Exception as exc:  # noqa: BLE001 - see the docstring
        return None, f"{type(exc).__name__}: {exc}"


def _folder_record(model_dir: Path, setting: LeanSetting, precision: LeanPrecision, choice_dir: Path) -> Path:
    """Where the pass of `_record_folder` is kept: per model folder and the size and time of each file the
    direct loading reads, setting, precision, CPU and library versions (a file replaced in place, or an
    upgraded tokenizer or sentence-transformers, is checked again)."""
    import torch

    versions = "-".join(_version(name) for name in ("sentence-transformers", "transformers", "tokenizers"))
    files = "-".join(f"{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in folder_files(model_dir))
    digest = choice_key(model_dir=model_dir,
                        device=f"lean-folder-v{LEAN_VERSION}-{setting}-{precision}-{versions}-{files}",
                        cpu=_hardware(), torch_version=str(torch.__version__), batch_size=0, threads=0)
    return choice_dir / f"lean-folder-{digest}.json"


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "none"


def _record_folder(model: SentenceTransformer, model_dir: Path, path: FastPath, setting: LeanSetting,
                   choice_dir: Path) -> None:
    """Check that `bert_folder.BertFolderModel` loads `model_dir` as `model` is loaded: the same token ids,
    masks and types (batched and alone) and token counts on the whole check sample, the same private counting
    tokenizer, and lean vectors within LEAN_TOLERANCE of `path`'s (its lean forward, checked already, in its
    precision); record a pass for `checked_folder`. Once per machine and precision: it costs about a second."""
    if path.lean is None:
        return
    precision = path.lean.precision
    record = _folder_record(model_dir, setting, precision, choice_dir)
    if record.exists():
        return
    folder, why = _load_folder(model_dir, precision)
    mismatch = why if folder is None else _tokenization_mismatch(model, folder)
    worst = float("inf")
    if folder is not None and mismatch is None:
        texts = list(LEAN_CHECK_TEXTS)
        eager = copy.copy(path.lean)  # like with like: a graph on packed weights may round otherwise (AMX)
        eager.traced = None
        own = encode(model, texts, replace(path, runner=None, query_runner=None, lean=eager))
        mine = encode(folder, texts, replace(path, runner=None, query_runner=None, lean=folder.lean))
        worst = float(np.abs(own - mine).max())
        if worst > LEAN_TOLERANCE:
            mismatch = f"its vectors differed by {worst:.2g} (allowed {LEAN_TOLERANCE:.0e})"
    if mismatch is not None:
        logger.info("embedder loads through sentence-transformers at every start: the direct loading does not "
                    "reproduce it (%s)", mismatch)
        return
    save_measured_choice(record, {"setting": setting, "precision": precision, "max_difference": worst},
                         what="direct folder loading")


def _tokenization_mismatch(model: SentenceTransformer, folder: BertFolderModel) -> str | None:
    """How `folder` tokenises the check sample differently from `model` (None: it does not)."""
    import torch
    from tokenizers import Tokenizer

    texts = list(CHECK_TEXTS)
    if int(model.max_seq_length or 0) != folder.max_seq_length:
        return f"max_seq_length {model.max_seq_length} against {folder.max_seq_length}"
    for group in [texts, *([t] for t in texts)]:
        theirs, mine = model.preprocess(group), folder.preprocess(group)
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            if name in theirs and not torch.equal(theirs[name].cpu(), mine[name]):
                return f"{name} differ on {len(group)} text(s)"
    if token_counts(model, texts, folder.max_seq_length) != folder.token_counts(texts):
        return "token counts differ"
    backend = getattr(model.tokenizer, "backend_tokenizer", None)
    if backend is None:
        return "the model's tokenizer is not a fast one"
    counting, own = Tokenizer.from_str(backend.to_str()), folder.counter()
    counting.no_padding()
    counting.no_truncation()
    for text in texts:
        a, b = counting.encode(text, add_special_tokens=False), own.encode(text, add_special_tokens=False)
        if a.ids != b.ids or a.offsets != b.offsets:
            return "the counting tokenizer differs"
    return None


_LEAN_PASSED: set[tuple[str, LeanSetting, Precision]] = set()
"""Model folders (with setting and precision) whose lean forward passed its checks in this process."""


def _packs(lean: LeanBert) -> bool:
    """Whether `lean`'s traced graph runs on weights packed for oneDNN: bfloat16 on a CPU with AMX."""
    return lean.precision == "bfloat16" and cpu_has_amx()


def _padded_vectors(lean: LeanBert, features: traced_forward.Features) -> np.ndarray:
    """A batch's unit rows through `lean` in the padded layout. The serving path packs a batch
    as unequal as the check sample (`lean_bert.layout_for`), so without this the padded layout, which batches
    of near-equal texts take, would never be held to the model's own vectors."""
    import torch

    with torch.inference_mode():
        pooled = lean.encode(*features, layout="padded")
        return torch.nn.functional.normalize(pooled.float(), dim=1).numpy()


def _check_batches(model: SentenceTransformer, texts: Sequence[str]) -> list[traced_forward.Features]:
    """The check sample as a traced forward is checked on: one padded batch, and one text alone."""
    import torch

    batches = []
    for group in (list(texts), list(texts[-1:])):
        features = model.preprocess(group)
        ids = features["input_ids"]
        types = features.get("token_type_ids")
        batches.append((ids, features["attention_mask"], torch.zeros_like(ids) if types is None else types))
    return batches


def with_backend(model: SentenceTransformer, path: FastPath, setting: BackendSetting, *, model_dir: Path,
                 choice_dir: Path | None, quantize: QuantizeSetting = "none") -> FastPath:
    """`path` with the OpenVINO runner when `setting` allows it and it passes its checks (cached per machine
    under `choice_dir`, like the precision); else `path` as it is, the reason logged. `quantize` lets the
    runner be the int8 model (`openvino_int8.py`) where it agrees with float32 (and, for "auto", is faster)."""
    import torch

    if setting == "torch" or model.device.type != "cpu":
        return path
    unavailable = None if openvino_available() else "the openvino package is not installed (pip install openvino)"
    unavailable = unavailable or unsupported_reason(model)
    cache = None
    if choice_dir is not None and unavailable is None:
        device = f"openvino-v{BACKEND_CHOICE_VERSION}-" + setting + ("" if quantize == "none" else f"-int8-{quantize}")
        key = choice_key(model_dir=model_dir, device=device, cpu=_hardware(), torch_version=str(torch.__version__),
                         batch_size=path.batch_size, threads=torch.get_num_threads())
        cache = choice_dir / f"backend-{key}.json"
    choice = load_backend_choice(cache) if cache is not None else None
    runner = None
    reference = lambda t: encode(model, t, path, precision="float32")  # noqa: E731
    if unavailable is None and (choice is None or "openvino" in (choice.backend, choice.query_backend)):
        try:
            wanted: QuantizeSetting = quantize if choice is None else "int8" if choice.int8 else "none"
            runner = _openvino_runner(model, model_dir=model_dir, choice_dir=choice_dir, reference=reference,
                                      quantize=wanted)  # a cached int8 choice is checked again, not timed again
        except Exception as exc:  # noqa: BLE001 - any failure to convert or compile means: torch, and why
            unavailable = f"conversion failed: {exc}"
    if choice is None:
        choice = choose_backend(setting, reference=reference, torch_path=lambda t: encode(model, t, path),
                                candidate=runner, unavailable=unavailable,
                                int8=runner is not None and runner.precision == "int8")
        if cache is not None and unavailable is None:
            save_backend_choice(cache, choice)
    logger.info("embedder backend %s", choice.reason)
    if runner is None:
        return replace(path, backend_choice=choice)
    return replace(path, runner=runner if choice.backend == "openvino" else None,
                   query_runner=runner if choice.query_backend == "openvino" else None, backend_choice=choice)


def _openvino_runner(model: SentenceTransformer, *, model_dir: Path, choice_dir: Path | None,
                     reference: Callable[[Sequence[str]], np.ndarray], quantize: QuantizeSetting) -> OpenVinoEncoder:
    """The converted model (bfloat16 where the CPU has it), or its int8 copy when `quantize` allows and
    `prefer_int8` takes it; a failure to quantise falls back to the float model, logged."""
    import torch

    from ragsvc.native import cache_dir as native_cache_dir

    flags = _hardware()
    ir_dir = choice_dir or native_cache_dir().parent / "embed"
    bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
    xml = export(model, model_dir=model_dir, cache_dir=ir_dir)
    runner = OpenVinoEncoder(model, xml, bf16=bf16, num_threads=torch.get_num_threads())
    if quantize == "none":
        return runner
    if not nncf_available():
        logger.log(logging.WARNING if quantize == "int8" else logging.INFO,
                   "embedder int8 not used: the nncf package is not installed (pip install 'ragsvc[openvino]')")
        return runner
    try:
        tokenizer = private_tokenizer(model.tokenizer, int(model.max_seq_length or 512))
        int8_xml = quantize_model(xml, tokenizer=tokenizer, pad_id=int(model.tokenizer.pad_token_id or 0),
                                  cache_dir=ir_dir)
        int8 = OpenVinoEncoder(model, int8_xml, bf16=bf16, num_threads=torch.get_num_threads(), int8=True)
    except Exception as exc:  # noqa: BLE001 - a model NNCF cannot quantise runs in its float precision
        logger.warning("embedder int8 not used: quantisation failed: %s", exc)
        return runner
    use, reason = prefer_int8(quantize, reference=reference, float_model=runner, int8_model=int8)
    logger.info("embedder %s", reason)
    return int8 if use else runner


def _hardware() -> str:
    """What the choice depends on besides the model: the CPU's model and instruction flags (bf16 support shows
    there), and the GPU's name when CUDA is present."""
    import torch

    lines = []
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith(("model name", "flags", "Features")):  # Features: Arm's flags
                    lines.append(line.strip())
                if len(lines) == 2:
                    break
    except OSError:
        lines.append(platform.processor())
    if torch.cuda.is_available():
        lines.append(torch.cuda.get_device_name())
    return "\n".join(lines)
