"""Which precision the embedder runs in: measured on the machine at hand, checked against float32 first.

Reduced precision (bfloat16 autocast on CPUs with native bf16 instructions, float16 on CUDA) can nearly halve
embedding time, but whether it does depends on the instructions the CPU has and on the model, and a
precision that bends the vectors would quietly change every search. So a path is used only after two checks
on a fixed sample: its vectors agree with the float32 reference (mean cosine >= 0.99 and min >= 0.98, per
row), and, when the choice is automatic, it is measurably faster (at least `MIN_SPEEDUP`). Otherwise the
embedder runs in float32 and says why in the log.

The result of the automatic choice is cached in a small JSON file keyed by model folder, device, CPU and torch
version, so a server or CLI pays for the measurement once per machine rather than at every start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, cast

import numpy as np

logger = logging.getLogger(__name__)

Precision = Literal["float32", "bfloat16", "float16"]
PrecisionSetting = Literal["auto", "float32", "bfloat16", "float16"]
MIN_MEAN_COSINE = 0.99
MIN_COSINE = 0.98
MIN_SPEEDUP = 1.1
"""A reduced precision has to save at least this much time to be chosen over float32: below it, timing noise
on a shared machine could pick a path that is not really faster."""
CHOICE_VERSION = 1

CHECK_TEXTS: tuple[str, ...] = (
    "",
    "KV cache",
    "What does paged attention keep in fixed-size blocks?",
    "Alterations of the architecture of cerebral white matter in the developing human brain can affect "
    "cortical development and result in functional disabilities.",
    "def merge(a: list[int], b: list[int]) -> list[int]:\n    return sorted(a + b)",
    "The median survival was 14.2 months (95% CI 11.8-16.5; p < 0.001) in 1,204 patients given 5 mg/kg.",
    "# Ingest\n\nFiles are chunked by the embedder's tokenizer, embedded in batches and stored in one "
    "transaction, so a crash never leaves half a document behind.",
    "Die Katze schläft auf dem warmen Fensterbrett, während draußen der Regen fällt.",
    "Hybrid retrieval fuses dense nearest neighbours with BM25 by reciprocal rank, then reranks the head. " * 4,
    "Protein kinase C phosphorylates the substrate at serine 473; knock-down by siRNA abolished the effect, "
    "and rescue with a phospho-mimetic mutant restored migration in vitro and metastasis in vivo. " * 8,
)
"""The fixed sample every reduced-precision path is checked on: empty, short, code, numbers, non-English,
and texts past the model's truncation length (the last one is over 400 tokens)."""


@dataclass(frozen=True, slots=True)
class Agreement:
    """Row-wise cosine between a candidate's vectors and the float32 reference's."""

    cosine_mean: float
    cosine_min: float

    @property
    def passed(self) -> bool:
        return self.cosine_mean >= MIN_MEAN_COSINE and self.cosine_min >= MIN_COSINE


@dataclass(frozen=True, slots=True)
class PrecisionChoice:
    """The precision chosen, and the evidence: agreement with float32 and the measured speed-up."""

    precision: Precision
    reason: str
    cosine_mean: float = 1.0
    cosine_min: float = 1.0
    speedup: float = 1.0


def agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """Cosine per row of two (n, dim) arrays (normalised here, so raw model outputs compare too)."""
    if reference.shape != candidate.shape or reference.ndim != 2:
        raise ValueError(f"shapes differ: reference {reference.shape}, candidate {candidate.shape}")
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cosine = np.einsum("nd,nd->n", ref, cand) / np.maximum(norms, 1e-12)  # (n,)
    return Agreement(cosine_mean=float(cosine.mean()), cosine_min=float(cosine.min()))


Measure = Callable[[Precision], tuple[np.ndarray, float]]
"""Embeds the check sample in a precision: its vectors (n, dim) and the best of a few timed seconds."""


def choose_precision(setting: PrecisionSetting, candidates: Sequence[Precision], measure: Measure
                     ) -> PrecisionChoice:
    """float32 when asked; otherwise the asked precision (or, for "auto", the fastest of `candidates`) if it
    agrees with float32 on the sample and, for "auto", beats it by `MIN_SPEEDUP`. Reasons are logged."""
    if setting == "float32":
        return PrecisionChoice("float32", "float32 was asked for")
    reference, reference_s = measure("float32")
    tried = list(candidates) if setting == "auto" else [cast(Precision, setting)]
    reasons: list[str] = []
    best: PrecisionChoice | None = None
    for precision in tried:
        vectors, seconds = measure(precision)
        agree = agreement(reference, vectors)
        speedup = reference_s / max(seconds, 1e-9)
        if not agree.passed:
            reasons.append(f"{precision} disagrees with float32 (cosine mean {agree.cosine_mean:.4f}, min "
                           f"{agree.cosine_min:.4f}; needs >= {MIN_MEAN_COSINE} and >= {MIN_COSINE})")
            continue
        if setting == "auto" and speedup < MIN_SPEEDUP:
            reasons.append(f"{precision} is not faster ({speedup:.2f}x float32; needs {MIN_SPEEDUP}x)")
            continue
        if best is None or speedup > best.speedup:
            best = PrecisionChoice(precision, f"{precision}: {speedup:.2f}x float32, cosine mean "
                                   f"{agree.cosine_mean:.4f}, min {agree.cosine_min:.4f}",
                                   agree.cosine_mean, agree.cosine_min, speedup)
    if best is not None:
        logger.info("embedder precision %s", best.reason)
        return best
    reason = "; ".join(reasons) if reasons else "no reduced precision to try on this device"
    logger.warning("embedder runs in float32: %s", reason)
    return PrecisionChoice("float32", reason)


def choice_key(*, model_dir: Path, device: str, cpu: str, torch_version: str, batch_size: int, threads: int) -> str:
    """What the automatic choice depends on, as a short digest (a new model, CPU or torch measures again, and
    so does another thread count: a server's embedding lanes run a thread each, where OpenVINO and torch
    compare otherwise than on two)."""
    stat = model_dir.stat()
    parts = [str(CHOICE_VERSION), str(model_dir.resolve()), str(stat.st_mtime_ns), device, cpu, torch_version,
             str(batch_size), f"threads={threads}"]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def load_choice(path: Path) -> PrecisionChoice | None:
    """A cached choice, or None when there is none or it cannot be read (then it is measured again)."""
    try:
        data = json.loads(path.read_text())
        choice = PrecisionChoice(**data)
    except (OSError, ValueError, TypeError):
        return None
    if choice.precision not in ("float32", "bfloat16", "float16"):
        return None
    return choice


def save_choice(path: Path, choice: PrecisionChoice) -> None:
    save_measured_choice(path, asdict(choice), what="precision")


def save_measured_choice(path: Path, record: dict[str, object], *, what: str) -> None:
    """Write a measured choice to a temporary name, then rename (a reader never sees half a file). Best
    effort: a read-only cache folder only means measuring again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("could not cache the embedder %s choice at %s: %s", what, path, exc)
