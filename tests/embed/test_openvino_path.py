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


@pytest.mark.parametrize(("documents", "queries", "backend", "query_backend"), [
    (1.5, 2.5, "openvino", "openvino"),
    (1.0, 2.4, "torch", "openvino"),  # a batch of documents runs alike, a lone query runs faster: queries only
    (1.3, 0.9, "openvino", "torch"),
    (1.05, 1.0, "torch", "torch"),
])
def test_documents_and_single_queries_are_measured_apart(monkeypatch, documents, queries, backend, query_backend):
    from ragsvc.embed import openvino_path

    rng = np.random.default_rng(1)
    ref = rng.normal(size=(16, 8)).astype(np.float32)
    last: list[tuple[str, int]] = []

    def encoder(name: str):
        def encode(texts):
            last.append((name, len(texts)))
            return ref[: len(texts)]
        return encode

    seconds = {("torch", "documents"): 1.0, ("openvino", "documents"): 1.0 / documents,
               ("torch", "queries"): 1.0, ("openvino", "queries"): 1.0 / queries}

    def fake_best_seconds(encode, texts, repeats):  # a pass's time by who ran it and on what shape
        encode(texts)
        name, batch = last[-1]
        return seconds[(name, "queries" if batch == 1 else "documents")]

    monkeypatch.setattr(openvino_path, "best_seconds", fake_best_seconds)
    choice = choose_backend("auto", reference=encoder("torch"), torch_path=encoder("torch"),
                            candidate=encoder("openvino"), unavailable=None)
    assert (choice.backend, choice.query_backend) == (backend, query_backend), choice.reason
    assert choice.speedup == pytest.approx(documents) and choice.query_speedup == pytest.approx(queries)
    assert "single queries" in choice.reason


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
    choice = BackendChoice("torch", "faster for queries", 0.9999, 0.9998, 1.02, query_backend="openvino",
                           query_speedup=2.4)
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
    # unpinned: pinned, every lane's one-thread copy ran on the first core (two lanes on 2 cores used one)
    assert fast.fast_path.runner._compiled.get_property("ENABLE_CPU_PINNING") is False
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
    assert plain.fast_path.query_runner is None
