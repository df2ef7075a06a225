"""The int8 OpenVINO model: its fixed calibration sample, the rule that takes it only when it agrees with float32
(and, for "auto", is faster), and the real quantisation of MiniLM, skipped with the reason where nncf or
openvino is not installed."""

from __future__ import annotations

import numpy as np
import pytest

from ragsvc.embed.calibration import calibration_digest, calibration_texts
from ragsvc.embed.embedder import SentenceTransformerEmbedder
from ragsvc.embed.openvino_int8 import calibration_inputs, nncf_available, prefer_int8
from ragsvc.embed.openvino_path import private_tokenizer
from ragsvc.embed.precision import CHECK_TEXTS

needs_nncf = pytest.mark.skipif(not nncf_available(),
                                reason="nncf and openvino are not installed (pip install 'ragsvc[openvino]')")


def test_the_calibration_sample_is_fixed_varied_and_reaches_past_the_truncation_length(minilm):
    texts = calibration_texts()
    assert texts == calibration_texts() and calibration_digest() == calibration_digest()
    assert "" in texts and not set(texts) & set(CHECK_TEXTS[1:]), "checked on texts it was not calibrated on"
    own = private_tokenizer(minilm._model.tokenizer, minilm.max_seq_length)
    inputs = calibration_inputs(own, pad_id=minilm._model.tokenizer.pad_token_id)
    widths = [batch["input_ids"].shape[1] for batch in inputs]
    assert sum(batch["input_ids"].shape[0] for batch in inputs) == len(texts)
    lengths = [int(n) for batch in inputs for n in batch["attention_mask"].sum(axis=1)]
    assert min(lengths) == 2 and max(widths) == minilm.max_seq_length  # [CLS][SEP] alone, and truncated ones
    assert widths == sorted(widths, reverse=True), "length-sorted batches, padded little"


def _encoder(vectors: np.ndarray, work: int = 0):
    """Returns `vectors`; with `work`, after an SVD of that size (real work that takes time, not a sleep)."""
    def encode(texts):
        if work:
            np.linalg.svd(np.ones((work, work)))
        return vectors[: len(texts)]
    return encode


def test_int8_is_taken_only_when_it_agrees_and_for_auto_only_when_faster():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(len(CHECK_TEXTS), 16)).astype(np.float32)
    close, far = ref + 1e-3, rng.normal(size=ref.shape).astype(np.float32)
    same = _encoder(ref)
    assert prefer_int8("none", reference=same, float_model=same, int8_model=_encoder(close)) == (
        False, "int8 was not asked for")
    use, reason = prefer_int8("int8", reference=same, float_model=same, int8_model=_encoder(far))
    assert not use and "disagrees" in reason
    use, reason = prefer_int8("int8", reference=same, float_model=same, int8_model=_encoder(close))
    assert use and "agrees" in reason
    use, reason = prefer_int8("auto", reference=same, float_model=_encoder(ref), int8_model=_encoder(close, 300))
    assert not use and "not faster" in reason
    use, reason = prefer_int8("auto", reference=same, float_model=_encoder(ref, 300), int8_model=_encoder(close))
    assert use and "the float OpenVINO model" in reason


@needs_nncf
@pytest.mark.slow
def test_the_int8_model_agrees_with_float32_and_is_built_once(minilm, tmp_path):
    texts = ["", "KV cache", "Tides follow the moon; the moon pulls the oceans. " * 40, "x" * 20_000,
             "Die Katze schläft.", "def f(a):\n    return a", "The median age was 61 (range 23-88); 58% were men.",
             "Loss of the gene in zebrafish disrupts fin regeneration, and the blastema fails to form."]
    fast = SentenceTransformerEmbedder(precision="bfloat16", sort_by_length=True, backend="openvino",
                                       quantize="int8", choice_dir=tmp_path)
    assert fast.fast_path is not None and fast.fast_path.label == "openvino-int8", fast.fast_path
    assert fast.fast_path.backend_choice is not None and fast.fast_path.backend_choice.int8
    assert fast.id == minilm.id
    cosine = np.sum(fast.embed_documents(texts) * minilm.embed_documents(texts), axis=1)
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.98
    again = SentenceTransformerEmbedder(precision="bfloat16", sort_by_length=True, backend="openvino",
                                        quantize="int8", choice_dir=tmp_path)
    assert again.fast_path is not None and again.fast_path.label == "openvino-int8"
    assert len(list(tmp_path.glob("openvino-int8-*"))) == 1


def test_the_quantize_setting_is_checked_and_reaches_the_embedder(monkeypatch):
    import pydantic

    import ragsvc.embed.embedder as embedder_module
    from ragsvc.config import EmbedSettings

    with pytest.raises(pydantic.ValidationError, match="quantize"):
        EmbedSettings(quantize="int4")
    seen = {}
    monkeypatch.setattr(embedder_module, "SentenceTransformerEmbedder", lambda *a, **kw: seen.update(kw))
    embedder_module.embedder_from_settings(EmbedSettings(quantize="none"))
    assert seen["quantize"] == "none" and seen["backend"] == "auto"
    assert EmbedSettings().quantize == "auto"
