"""Static int8 quantisation of the converted OpenVINO model with NNCF, calibrated on a fixed built-in sample.

On CPUs with int8 dot-product instructions (AVX512-VNNI, AVX-VNNI, AMX) the encoder's matrix products run
in int8 with int32 accumulation, about twice as many per cycle as in bfloat16, so the quantised model encodes
a corpus clearly faster than the bfloat16 one. The scales come from NNCF's post-training quantisation
(`nncf.quantize` with the transformer model type: SmoothQuant to move activation outliers into the weights,
then per-tensor activation and per-channel weight scales, fast bias correction), calibrated on
`calibration.py`'s fixed multi-domain sample, never on the texts being ingested, so one machine always builds
the same model and no benchmark corpus tunes it.

Quantisation bends the vectors more than bfloat16 does, so the quantised model, like every path, is used only
after it agrees with float32 on the check sample (`precision.agreement`); where it does not, the bfloat16
OpenVINO model (or torch) is used and the reason logged. The quantised IR is cached beside the float one under
a key of that model, NNCF's version and the calibration sample's digest, written to a temporary folder and
then renamed, like the conversion.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ragsvc.embed.batching import length_sorted_batches
from ragsvc.embed.calibration import calibration_digest, calibration_texts
from ragsvc.embed.openvino_path import Encode, best_seconds, padded_inputs, save_ir, shared_core
from ragsvc.embed.precision import CHECK_TEXTS, MIN_SPEEDUP, agreement

QuantizeSetting = Literal["auto", "none", "int8"]
INT8_VERSION = 1
CALIBRATION_BATCH = 8
"""Texts per calibration input; sorted by length, so each batch is padded little, as at inference."""


def nncf_available() -> bool:
    return importlib.util.find_spec("nncf") is not None and importlib.util.find_spec("openvino") is not None


def calibration_inputs(tokenizer: Any, pad_id: int) -> list[dict[str, np.ndarray]]:
    """The calibration sample as the model's padded int64 inputs, in length-sorted batches (`tokenizer` is the
    encoder's private one: truncating as the model does, never padding)."""
    tokens = [(e.ids, e.type_ids) for e in tokenizer.encode_batch(calibration_texts())]
    batches = length_sorted_batches([len(ids) for ids, _ in tokens], batch_size=CALIBRATION_BATCH,
                                    max_batch_tokens=None)
    return [padded_inputs([tokens[int(i)] for i in rows], pad_id=pad_id) for rows in batches]


def quantize(xml: Path, *, tokenizer: Any, pad_id: int, cache_dir: Path) -> Path:
    """The int8 IR (model.xml) of the float IR at `xml`, quantised once per key and reused after."""
    import nncf

    key = hashlib.sha256("\x00".join([str(INT8_VERSION), str(xml.resolve()), nncf.__version__,
                                      calibration_digest()]).encode()).hexdigest()[:16]
    target = cache_dir / f"openvino-int8-{key}"
    if (target / "model.xml").is_file():
        return target / "model.xml"
    inputs = calibration_inputs(tokenizer, pad_id)
    nncf_logger = logging.getLogger("nncf")
    previous = nncf_logger.level
    nncf.set_log_level(logging.ERROR)  # NNCF reports statistics tables at INFO
    try:  # and draws progress bars on stdout, which is the CLI's to use (a one-off of some seconds per machine)
        with contextlib.redirect_stdout(io.StringIO()):
            quantized = nncf.quantize(shared_core().read_model(str(xml)), nncf.Dataset(inputs), subset_size=len(inputs),
                                      model_type=nncf.ModelType.TRANSFORMER,
                                      preset=nncf.QuantizationPreset.MIXED)
    finally:
        nncf_logger.setLevel(previous)
    return save_ir(quantized, target)


def prefer_int8(setting: QuantizeSetting, *, reference: Encode, float_model: Encode, int8_model: Encode,
                repeats: int = 3) -> tuple[bool, str]:
    """Whether to run the int8 model, and why: it must agree with the float32 `reference` on the check sample
    and, for "auto", encode it `MIN_SPEEDUP` faster than the float OpenVINO model (a CPU without int8
    dot-product instructions may run it no faster)."""
    if setting == "none":
        return False, "int8 was not asked for"
    texts = list(CHECK_TEXTS)
    agree = agreement(reference(texts), int8_model(texts))
    scores = f"cosine mean {agree.cosine_mean:.4f}, min {agree.cosine_min:.4f}"
    if not agree.passed:
        return False, f"int8 disagrees with float32 ({scores})"
    if setting == "int8":
        return True, f"int8 agrees with float32 ({scores}); asked for, or chosen here before"
    speedup = best_seconds(float_model, texts, repeats) / max(best_seconds(int8_model, texts, repeats), 1e-9)
    if speedup < MIN_SPEEDUP:
        return False, f"int8 is not faster ({speedup:.2f}x the float OpenVINO model; needs {MIN_SPEEDUP}x)"
    return True, f"int8 {speedup:.2f}x the float OpenVINO model ({scores})"
