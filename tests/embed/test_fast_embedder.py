"""The fast path against the float32 reference: sentence-transformers' own encode of the same texts (real MiniLM)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from ragsvc.embed import fast as fast_module
from ragsvc.embed.batching import length_sorted_batches, restore_order
from ragsvc.embed.embedder import SentenceTransformerEmbedder, embed_path
from ragsvc.embed.precision import MIN_COSINE, MIN_MEAN_COSINE, Precision, agreement, choose_precision, load_choice

TEXTS = [
    "",
    "KV cache",
    "Paged attention keeps the key/value cache in fixed-size blocks that are allocated on demand.",
    "Reciprocal rank fusion merges dense and lexical rankings without calibrating their scores. " * 3,
    "Protein kinase C phosphorylates the substrate at serine 473 in vitro. " * 60,  # far past 256 tokens
    "def merge(a, b):\n    return sorted(a + b)",
    "Die Katze schläft auf dem warmen Fensterbrett.",
    "x" * 20_000,  # one long run of characters
] + [f"Document {i}: " + "word " * (i * 7 % 90) for i in range(40)]


def bf16_texts() -> list[str]:
    """TEXTS, or on a CPU that emulates bfloat16 (many times slower than float32) its short varied ones: the
    two truncated at 256 tokens and the 40 numbered documents cost most of such a check's time."""
    if fast_module.native_bf16(fast_module._hardware()):
        return TEXTS
    return [TEXTS[i] for i in (0, 1, 2, 3, 5, 6)]


@pytest.fixture(scope="module")
def reference(minilm) -> np.ndarray:
    return minilm.embed_documents(TEXTS)  # sentence-transformers' encode, float32


def test_batches_cover_every_row_longest_first_within_the_budget():
    counts = [5, 300, 12, 12, 0, 77, 256, 1]
    batches = length_sorted_batches(counts, batch_size=3, max_batch_tokens=600)
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == list(range(len(counts)))
    assert [counts[i] for i in order] == sorted(counts, reverse=True)
    assert order.tolist().index(2) < order.tolist().index(3)  # ties keep input order
    for rows in batches:
        assert len(rows) <= 3 and (len(rows) == 1 or len(rows) * max(counts[i] for i in rows) <= 600)
    outputs = [np.stack([rows, rows], axis=1).astype(np.float32) for rows in batches]  # (rows, 2): each row's index
    restored = restore_order(batches, outputs, len(counts))
    assert restored[:, 0].tolist() == list(range(len(counts)))


def test_batching_refuses_bad_sizes():
    with pytest.raises(ValueError, match="batch_size"):
        length_sorted_batches([1], batch_size=0)
    with pytest.raises(ValueError, match="max_batch_tokens"):
        length_sorted_batches([1], batch_size=2, max_batch_tokens=0)
    with pytest.raises(RuntimeError, match="cover"):
        restore_order([np.array([0])], [np.zeros((1, 2), np.float32)], 2)


def _fake_measure(vectors: dict[str, np.ndarray], seconds: dict[str, float]):
    return lambda precision: (vectors[precision], seconds[precision])


def test_a_path_that_disagrees_or_is_not_faster_falls_back_to_float32_with_the_reason():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(10, 8))
    close, far = ref + 1e-4 * rng.normal(size=ref.shape), rng.normal(size=ref.shape)
    fast = _fake_measure({"float32": ref, "bfloat16": close}, {"float32": 1.0, "bfloat16": 0.5})
    assert choose_precision("auto", ["bfloat16"], fast).precision == "bfloat16"
    wrong = choose_precision("bfloat16", ["bfloat16"], _fake_measure({"float32": ref, "bfloat16": far},
                                                                      {"float32": 1.0, "bfloat16": 0.5}))
    assert wrong.precision == "float32" and "disagrees with float32" in wrong.reason
    slow = _fake_measure({"float32": ref, "bfloat16": close}, {"float32": 1.0, "bfloat16": 0.99})
    assert choose_precision("auto", ["bfloat16"], slow).precision == "float32"
    assert choose_precision("bfloat16", ["bfloat16"], slow).precision == "bfloat16"  # asked for: agreement only
    assert choose_precision("float32", ["bfloat16"], fast).reason == "float32 was asked for"


def test_a_cpu_without_bfloat16_instructions_is_not_measured_for_it(tmp_path, monkeypatch):
    for hardware, native in [("model name\t: EPYC\nflags\t: fpu avx2 fma", False),
                             ("model name\t: Xeon\nflags\t: avx2 avx512_bf16", True),
                             ("flags\t: amx_bf16 amx_tile", True),
                             ("Features\t: fp asimd bf16 i8mm", True),
                             ("Features\t: fp asimd", False),
                             ("model name\t: unknown", True)]:  # flags unknown: measured, as before
        assert fast_module.native_bf16(hardware) is native, hardware
    monkeypatch.setattr(fast_module, "_hardware", lambda: "model name\t: EPYC\nflags\t: fpu avx2 fma")
    measured: list[str] = []
    monkeypatch.setattr(fast_module, "encode", lambda *a, **k: measured.append(k["precision"]))
    embedder = SentenceTransformerEmbedder(precision="auto", sort_by_length=True, choice_dir=tmp_path,
                                           lean_forward="off")  # its check encodes too; this test counts timings
    assert embedder.fast_path is not None and embedder.fast_path.precision == "float32"
    assert "no bfloat16 instructions" in embedder.fast_path.choice.reason and measured == []
    assert load_choice(next(tmp_path.glob("precision-*.json"))) == embedder.fast_path.choice
    threads = torch.get_num_threads()
    try:  # a server's lanes run a thread each: a choice measured on another thread count is not theirs
        torch.set_num_threads(1 if threads != 1 else 2)
        SentenceTransformerEmbedder(precision="auto", sort_by_length=True, choice_dir=tmp_path, lean_forward="off")
    finally:
        torch.set_num_threads(threads)
    assert len(list(tmp_path.glob("precision-*.json"))) == 2


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_each_path_agrees_with_the_reference_in_input_order(minilm, reference, precision: Precision, monkeypatch):
    if not fast_module.native_bf16(fast_module._hardware()):  # the check's timings decide nothing asked for here,
        monkeypatch.setattr(fast_module, "TIMED_REPEATS", 1)  # and emulated bfloat16 makes each repeat seconds
    fast = SentenceTransformerEmbedder(precision=precision, sort_by_length=True)
    assert fast.id == minilm.id  # same function within the bound: collections keep working
    # MiniLM is a BERT model: both take the lean forward (bfloat16 on a CPU with AMX: its weights packed)
    labels = (f"{precision}-lean-traced", f"{precision}-lean-traced-packed")
    assert embed_path(fast).split(": ")[0] in labels and embed_path(minilm) == "sentence-transformers encode"
    texts = TEXTS if precision == "float32" else bf16_texts()  # several texts: the order check needs them
    reference = reference[[TEXTS.index(t) for t in texts]]
    vectors = fast.embed_documents(texts)
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    agree = agreement(reference, vectors)
    bound = (0.9999, 0.9999) if precision == "float32" else (MIN_MEAN_COSINE, MIN_COSINE)
    assert agree.cosine_mean >= bound[0] and agree.cosine_min >= bound[1], agree
    # order restored after sorting: each row is closest to its own reference row
    assert ((vectors @ reference.T).argmax(axis=1) == np.arange(len(texts))).mean() >= 0.95
    shuffled = list(range(len(texts)))
    random.Random(1).shuffle(shuffled)
    again = fast.embed_documents([texts[i] for i in shuffled])
    assert agreement(vectors[shuffled], again).cosine_min >= 0.999
    assert fast.embed_documents([]).shape == (0, fast.dim)


def test_queries_take_the_fast_path_with_their_prefix(minilm):
    fast = SentenceTransformerEmbedder(precision="float32", sort_by_length=True, query_prefix="query: ")
    plain = SentenceTransformerEmbedder(query_prefix="query: ")
    texts = ["what keeps the KV cache?", "", "blocks " * 400]
    assert agreement(plain.embed_queries(texts), fast.embed_queries(texts)).cosine_min >= 0.9999
    assert agreement(plain.embed_query("x")[None], fast.embed_query("x")[None]).cosine_min >= 0.9999


def test_the_automatic_choice_is_measured_once_and_cached(tmp_path):
    first = SentenceTransformerEmbedder(precision="auto", sort_by_length=True, choice_dir=tmp_path)
    assert first.fast_path is not None
    files = list(tmp_path.glob("precision-*.json"))
    assert len(files) == 1
    cached = load_choice(files[0])
    assert cached == first.fast_path.choice
    if cached.precision != "float32":
        assert cached.cosine_mean >= MIN_MEAN_COSINE and cached.speedup > 1.0
    files[0].write_text("{not json")  # a damaged cache is measured again, never trusted
    again = SentenceTransformerEmbedder(precision="auto", sort_by_length=True, choice_dir=tmp_path)
    assert again.fast_path is not None and load_choice(files[0]) is not None


@pytest.mark.gpu
def test_on_cuda_a_reduced_precision_path_agrees_with_the_reference(reference):
    fast = SentenceTransformerEmbedder(device="cuda", precision="auto", sort_by_length=True, batch_size=256)
    assert fast.fast_path is not None
    agree = agreement(reference, fast.embed_documents(TEXTS))
    assert agree.cosine_mean >= MIN_MEAN_COSINE and agree.cosine_min >= MIN_COSINE, (fast.fast_path.choice, agree)


def test_the_cuda_plan_is_chosen_on_the_cpu_float16_first_in_large_batches():
    """What the CUDA path decides, checked without a GPU. The CUDA forward passes themselves need one (the test
    above, marked gpu, runs only there; this project's machines have none), so here the device plan, the
    choice between float16 and bfloat16 over measured stand-ins, and the backend step are run on the CPU."""
    assert fast_module.device_plan("cuda", 32) == (("float16", "bfloat16"), fast_module.CUDA_MIN_BATCH)
    assert fast_module.device_plan("cuda:1", 1024) == (("float16", "bfloat16"), 1024)
    assert fast_module.device_plan("cpu", 32, hardware="model name\t: Xeon\nflags\t: avx2 avx512_bf16") == (
        ("bfloat16",), 32)
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(10, 8))
    close, far = ref + 1e-4 * rng.normal(size=ref.shape), rng.normal(size=ref.shape)
    candidates, _ = fast_module.device_plan("cuda", 32)
    both = _fake_measure({"float32": ref, "float16": close, "bfloat16": close},
                         {"float32": 1.0, "float16": 0.2, "bfloat16": 0.25})
    assert choose_precision("auto", candidates, both).precision == "float16"  # the faster of the two
    overflow = _fake_measure({"float32": ref, "float16": far, "bfloat16": close},
                             {"float32": 1.0, "float16": 0.2, "bfloat16": 0.25})
    chosen = choose_precision("auto", candidates, overflow)
    assert chosen.precision == "bfloat16", chosen  # float16 disagreeing is passed over, not used
    on_gpu = type("Model", (), {"device": type("Device", (), {"type": "cuda"})()})()  # stands in for a CUDA model
    path = fast_module.FastPath(chosen, 256, 256)
    assert fast_module.with_backend(on_gpu, path, "auto", model_dir=Path("."), choice_dir=None) is path  # no OpenVINO


def test_small_document_passes_take_the_runner_measured_on_single_texts(monkeypatch):
    """A server's small ingests (few texts, or short ones) are shaped like the single texts the query runner
    was chosen on, not like the batch of long texts that chose the documents' one."""
    from dataclasses import replace

    from ragsvc.embed.embedder import SHORT_TEXT_CHARS, SMALL_PASS_TEXTS

    embedder = SentenceTransformerEmbedder(precision="float32", sort_by_length=True)
    assert embedder.fast_path is not None
    singles = replace(embedder.fast_path, batch_size=embedder.fast_path.batch_size + 1)  # told apart by identity
    embedder._query_path = singles
    used: list[object] = []
    real = fast_module.encode
    monkeypatch.setattr(fast_module, "encode", lambda model, texts, path, **kw: used.append(path) or real(
        model, texts, path, **kw))
    long = "a paragraph of a longer document " * (SHORT_TEXT_CHARS // 30)
    assert len(long) > SHORT_TEXT_CHARS
    small = embedder.embed_documents([long] * SMALL_PASS_TEXTS)
    embedder.embed_documents(["a short note"] * (SMALL_PASS_TEXTS + 4))
    embedder.embed_documents(["a short note"] * SMALL_PASS_TEXTS + [long])
    embedder.embed_queries(["a question"])
    assert used == [singles, singles, embedder.fast_path, singles]
    assert small.shape == (SMALL_PASS_TEXTS, embedder.dim)
