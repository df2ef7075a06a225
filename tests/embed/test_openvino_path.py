"""The OpenVINO path against the float32 reference (sentence-transformers' encode of the real MiniLM), and the
choice between it and torch. The conversion tests skip, with the reason, where openvino is not installed."""

from __future__ import annotations

import numpy as np
import pytest

from ragsvc.embed.embedder import SentenceTransformerEmbedder
from ragsvc.embed.openvino_path import (
    BackendChoice,
    choose_backend,
    load_backend_choice,
    openvino_available,
    padded_inputs,
    private_tokenizer,
    save_backend_choice,
)

needs_openvino = pytest.mark.skipif(not openvino_available(),
                                    reason="the openvino package is not installed (pip install 'ragsvc[openvino]')")

TEXTS = ["", "KV cache", "Tides follow the moon; the moon pulls the oceans. " * 40, "x" * 20_000,
         "Die Katze schläft.", "def f(a):\n    return a"] + [f"Doc {i}: " + "word " * (i * 11 % 80) for i in range(20)]


def _encoder(vectors: np.ndarray):
    return lambda texts: vectors[: len(texts)]


def test_the_choice_takes_openvino_only_when_it_agrees_and_is_faster():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(16, 8)).astype(np.float32)
    close = ref + 1e-4
    far = rng.normal(size=(16, 8)).astype(np.float32)
    same = _encoder(ref)
    assert choose_backend("torch", reference=same, torch_path=same, candidate=same, unavailable=None).backend == "torch"
    none = choose_backend("auto", reference=same, torch_path=same, candidate=None, unavailable="not installed")
    assert none.backend == "torch" and "not installed" in none.reason
    bad = choose_backend("openvino", reference=same, torch_path=same, candidate=_encoder(far), unavailable=None)
    assert bad.backend == "torch" and "disagrees" in bad.reason
    forced = choose_backend("openvino", reference=same, torch_path=same, candidate=_encoder(close), unavailable=None)
    assert forced.backend == "openvino" and forced.cosine_min > 0.999


def test_one_private_tokenisation_gives_the_inputs_the_transformers_call_gives(minilm):
    """The OpenVINO path tokenises once with its own copy of the tokenizer and pads in numpy; the model must see
    exactly what the transformers call (padding, truncation at the model's length) would have given it."""
    tokenizer, limit = minilm._model.tokenizer, minilm.max_seq_length
    own = private_tokenizer(tokenizer, limit)
    texts = TEXTS[1:]
    expected = tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="np")
    got = padded_inputs([(e.ids, e.type_ids) for e in own.encode_batch(texts)], pad_id=tokenizer.pad_token_id)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert got[name].dtype == np.int64 and np.array_equal(got[name], expected[name]), name
    tokenizer(["a b c"] * 2, padding="max_length", max_length=8, truncation=True)  # another caller's settings
    assert [e.ids for e in own.encode_batch(texts)] == [list(r[m == 1]) for r, m in
                                                       zip(got["input_ids"], got["attention_mask"], strict=True)]
    assert padded_inputs([], pad_id=0)["input_ids"].shape == (0, 0)


def test_a_choice_round_trips_and_a_broken_file_is_measured_again(tmp_path):
    choice = BackendChoice("openvino", "faster", 0.9999, 0.9998, 1.7)
    save_backend_choice(tmp_path / "c.json", choice)
    assert load_backend_choice(tmp_path / "c.json") == choice
    (tmp_path / "bad.json").write_text("{")
    assert load_backend_choice(tmp_path / "bad.json") is None
    assert load_backend_choice(tmp_path / "missing.json") is None


@needs_openvino
@pytest.mark.slow
def test_openvino_vectors_agree_with_float32_in_input_order(minilm, tmp_path):
    fast = SentenceTransformerEmbedder(precision="bfloat16", sort_by_length=True, backend="openvino",
                                       choice_dir=tmp_path)
    assert fast.fast_path is not None and fast.fast_path.runner is not None, fast.fast_path
    assert fast.id == minilm.id, "the same function: the id does not change"
    got = fast.embed_documents(TEXTS)
    ref = minilm.embed_documents(TEXTS)
    cosine = np.sum(got * ref, axis=1)
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.98
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)
    query = fast.embed_query("KV cache")
    assert float(query @ ref[1]) > 0.98
    again = SentenceTransformerEmbedder(precision="bfloat16", sort_by_length=True, backend="openvino",
                                        choice_dir=tmp_path)  # the converted model and the choice are reused
    assert again.fast_path is not None and again.fast_path.backend_choice == fast.fast_path.backend_choice
    assert len(list(tmp_path.glob("openvino-*"))) == 1


def test_without_openvino_the_auto_backend_is_torch_and_says_why(tmp_path, monkeypatch):
    import ragsvc.embed.fast as fast_module

    monkeypatch.setattr(fast_module, "openvino_available", lambda: False)
    plain = SentenceTransformerEmbedder(precision="float32", sort_by_length=True, backend="auto", choice_dir=tmp_path)
    assert plain.fast_path is not None and plain.fast_path.runner is None
    assert plain.fast_path.backend_choice is not None and "not installed" in plain.fast_path.backend_choice.reason
