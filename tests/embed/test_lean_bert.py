"""The lean BERT forward and its traced graph against transformers' own forward: a tiny random BertModel for
exactness over shapes, pooling modes and token types, the real packaged MiniLM through the embedder."""

from __future__ import annotations

import copy
import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from ragsvc.embed import fast as fast_module
from ragsvc.embed import packed_linear
from ragsvc.embed import traced_forward as traced_module
from ragsvc.embed.embedder import SentenceTransformerEmbedder, resolve_model_path
from ragsvc.embed.lean_bert import LeanBert, layout_for, lean_encoder, unsupported_reason
from ragsvc.embed.traced_forward import TracedForward, trace
from ragsvc.gemm_rows import bucketed_linear

from .test_fast_embedder import TEXTS, bf16_texts


@pytest.fixture(scope="module")
def tiny_bert():
    # Imported here: transformers' modeling modules import triton.language, which must come after
    # test_triton_quant sets TRITON_INTERPRET at its collection.
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=40, type_vocab_size=2)
    return BertModel(config, add_pooling_layer=False).eval()


def _batch(batch: int, tokens: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ids, a mask with rows padded to random lengths (the first row full), random token types."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 97, (batch, tokens), generator=g)
    lengths = torch.randint(1, tokens + 1, (batch,), generator=g)
    lengths[0] = tokens
    mask = (torch.arange(tokens)[None, :] < lengths[:, None]).long()
    types = torch.randint(0, 2, (batch, tokens), generator=g)
    return ids * mask, mask, types * mask


def _reference(bert, ids, mask, types, pooling: str) -> torch.Tensor:
    with torch.inference_mode():
        hidden = bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).float()
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize(("batch", "tokens"), [(1, 2), (1, 17), (3, 9), (7, 40)])
def test_the_lean_forward_computes_what_transformers_does(tiny_bert, pooling, batch, tokens):
    lean = LeanBert.from_module(tiny_bert, pooling)
    ids, mask, types = _batch(batch, tokens, seed=batch * 100 + tokens)
    with torch.inference_mode():
        mine = lean(ids, mask, types)
    torch.testing.assert_close(mine, _reference(tiny_bert, ids, mask, types, pooling), atol=2e-5, rtol=1e-4)


def test_without_token_types_the_first_type_is_used(tiny_bert):
    lean = LeanBert.from_module(tiny_bert, "mean")
    ids, mask, _ = _batch(4, 12, seed=5)
    with torch.inference_mode():
        torch.testing.assert_close(lean(ids, mask), lean(ids, mask, torch.zeros_like(ids)))


def test_an_unpadded_batch_needs_no_mask_and_gets_the_same_vectors(tiny_bert):
    lean = LeanBert.from_module(tiny_bert, "mean")
    ids = torch.randint(1, 97, (3, 11), generator=torch.Generator().manual_seed(2))
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)
    assert layout_for(mask) == "dense"
    with torch.inference_mode():
        dense = lean.encode(ids, mask, types, layout="dense")
        for layout in ("padded", "packed"):
            torch.testing.assert_close(lean.encode(ids, mask, types, layout=layout), dense)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_a_padded_batch_gets_the_same_vectors_padded_and_packed(tiny_bert, pooling):
    lean = LeanBert.from_module(tiny_bert, pooling)
    ids, mask, types = _batch(5, 17, seed=11)
    with torch.inference_mode():
        torch.testing.assert_close(lean.encode(ids, mask, types, layout="packed"),
                                   lean.encode(ids, mask, types, layout="padded"), atol=2e-6, rtol=1e-5)


def test_a_batch_is_packed_only_when_padded_enough():
    def mask(*lengths: int) -> torch.Tensor:
        return (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()

    assert layout_for(mask(20, 20)) == "dense"
    assert layout_for(mask(20, 19)) == "padded"  # 40 padded for 39 real tokens
    assert layout_for(mask(20, 14)) == "packed"  # 40 for 34
    assert layout_for(mask(20, 20, 20, 20, 20, 20, 14)) == "padded"  # 140 for 134: one short text in many


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_a_padded_batch_computes_its_real_tokens_only_and_each_text_as_if_alone(tiny_bert, pooling, monkeypatch):
    lean = LeanBert.from_module(tiny_bert, pooling)
    ids, mask, types = _batch(6, 30, seed=9)
    assert layout_for(mask) == "packed"
    alone = []
    with torch.inference_mode():
        for row in range(6):
            n = int(mask[row].sum())
            alone.append(lean(ids[row:row + 1, :n], mask[row:row + 1, :n], types[row:row + 1, :n]))
        rows = []
        linear = torch.nn.functional.linear
        monkeypatch.setattr(lean, "linear", lambda x, *a: rows.append(x.shape[0]) or linear(x, *a))
        batched = lean(ids, mask, types)
    assert int(mask.sum()) < 6 * 30
    assert set(rows) == {int(mask.sum())}  # every linear ran on the real tokens, none on padding
    torch.testing.assert_close(batched, torch.cat(alone), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_attention_runs_on_aligned_keys_and_computes_the_same_vectors(tiny_bert, layout, monkeypatch):
    from ragsvc.embed import lean_bert

    lean = LeanBert.from_module(tiny_bert, "mean")
    ids, mask, types = _batch(5, 13, seed=4)
    keys = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda q, k, v, **kw: keys.append(k.shape[2]) or sdpa(q, k, v, **kw))
    with torch.inference_mode():
        aligned = lean.encode(ids, mask, types, layout=layout)
        assert set(keys) == {16}  # 13 tokens, attended as 16 with 3 masked keys
        monkeypatch.setattr(lean_bert, "ATTENTION_ALIGN", 1)
        keys.clear()
        as_given = lean.encode(ids, mask, types, layout=layout)
        assert set(keys) == {13}
    torch.testing.assert_close(aligned, as_given, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(aligned, _reference(tiny_bert, ids, mask, types, "mean"), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_the_traced_graph_serves_shapes_it_was_not_traced_with(tiny_bert, pooling):
    lean = LeanBert.from_module(tiny_bert, pooling)
    traced = trace(lean, [_batch(2, 8, seed=1)])
    assert traced is not None
    for seed, (batch, tokens) in enumerate([(1, 2), (1, 30), (5, 13), (16, 40)]):
        features = _batch(batch, tokens, seed=seed)
        with torch.inference_mode():
            got = traced(*features)
        assert got is not None
        torch.testing.assert_close(got, _reference(tiny_bert, *features, pooling), atol=2e-5, rtol=1e-4)


def test_the_traced_forward_declines_more_tokens_than_positions_and_eager_runs(tiny_bert):
    lean = LeanBert.from_module(tiny_bert, "mean")
    lean.traced = trace(lean, [])
    assert lean.traced is not None
    ids, mask, types = _batch(2, 41, seed=3)
    assert lean.traced(ids, mask, types) is None
    with pytest.raises(RuntimeError), torch.inference_mode():  # eager, like transformers, has no 41st position
        lean(ids, mask, types)


@pytest.mark.parametrize("wrong", ["padded", "packed"])
def test_a_traced_graph_that_disagrees_is_refused(tiny_bert, monkeypatch, caplog, wrong):
    lean = LeanBert.from_module(tiny_bert, "mean")
    real = TracedForward.__init__

    def init(self, padded, packed, **kwargs):  # one of the two graphs is off by 0.01
        graphs = {"padded": padded, "packed": packed}
        graphs[wrong] = lambda *a, graph=graphs[wrong]: graph(*a) + 0.01
        real(self, graphs["padded"], graphs["packed"], **kwargs)

    monkeypatch.setattr(TracedForward, "__init__", init)
    ids, mask, types = _batch(2, 8, seed=4)
    mask[1, 4:] = 0  # padded 1.33x: the packed graph would serve it, and both are checked on it
    with caplog.at_level(logging.WARNING, logger="ragsvc.embed.traced_forward"):
        assert trace(lean, [(ids, mask, types)]) is None
    assert "differed" in caplog.text


def test_each_traced_graph_is_held_to_the_eager_forward_in_its_own_layout(tiny_bert, monkeypatch):
    # A bfloat16 GEMM of fewer rows may round differently (AMX: MiniLM's padded and packed vectors of one batch
    # differed by 6.6e-4); here the padded layout is offset by 5e-4 to stand for that. Each graph still matches
    # the eager forward of its own layout exactly, so the traced forward is kept.
    real = LeanBert.encode

    def rounding_apart(self, *args, layout, **kwargs):
        out = real(self, *args, layout=layout, **kwargs)
        return out + 5e-4 * out.norm(dim=1, keepdim=True) if layout == "padded" else out

    monkeypatch.setattr(LeanBert, "encode", rounding_apart)
    lean = LeanBert.from_module(tiny_bert, "mean")
    ids, mask, types = _batch(2, 8, seed=4)
    mask[1, 4:] = 0  # packed in service; the padded graph is checked on it too
    traced = trace(lean, [(ids, mask, types)])
    assert traced is not None
    assert traced.difference(lean, (ids, mask, types)) == 0.0


@pytest.fixture(scope="module")
def minilm_model(minilm):
    return minilm._model


@pytest.mark.parametrize(("change", "reason"), [
    (lambda m: setattr(m[0].auto_model.config, "hidden_act", "gelu_new"), "not exact gelu"),
    (lambda m: setattr(m[0].auto_model.config, "position_embedding_type", "relative_key"), "not absolute"),
    (lambda m: setattr(m[1], "pooling_mode", "max"), "pooling is 'max'"),
    (lambda m: m[0].auto_model.train(), "training mode"),
])
def test_models_it_does_not_reproduce_are_named_with_the_reason(minilm_model, change, reason):
    assert unsupported_reason(minilm_model) is None
    other = copy.deepcopy(minilm_model)
    change(other)
    assert reason in (unsupported_reason(other) or "")
    assert lean_encoder(other)[0] is None


@pytest.mark.parametrize("setting", ["eager", "traced"])
def test_the_embedder_gives_transformers_vectors_through_the_lean_forward(minilm, setting):
    lean = SentenceTransformerEmbedder(sort_by_length=True, precision="float32", backend="torch",
                                       lean_forward=setting)
    own = SentenceTransformerEmbedder(sort_by_length=True, precision="float32", backend="torch", lean_forward="off")
    assert own.fast_path is not None and own.fast_path.lean is None
    assert lean.fast_path is not None and lean.fast_path.lean is not None
    assert (lean.fast_path.lean.traced is not None) == (setting == "traced")
    np.testing.assert_allclose(lean.embed_documents(TEXTS), own.embed_documents(TEXTS), atol=1e-5)
    np.testing.assert_allclose(lean.embed_queries(TEXTS[:6]), own.embed_queries(TEXTS[:6]), atol=1e-5)
    np.testing.assert_allclose(lean.embed_query("what is paged attention?"),
                               minilm.embed_query("what is paged attention?"), atol=1e-5)


def test_a_lean_forward_that_disagrees_is_not_used_nor_remembered(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(fast_module, "_LEAN_PASSED", set())
    real = LeanBert.encode
    monkeypatch.setattr(LeanBert, "encode", lambda self, *a, **k: real(self, *a, **k).flip(-1))
    with caplog.at_level(logging.WARNING, logger="ragsvc.embed.fast"):
        embedder = SentenceTransformerEmbedder(sort_by_length=True, precision="float32", backend="torch",
                                               lean_forward="traced", choice_dir=tmp_path)
    assert embedder.fast_path is not None and embedder.fast_path.lean is None
    assert "lean float32 forward differed" in caplog.text
    assert not list(tmp_path.glob("lean-*.json")) and not fast_module._LEAN_PASSED


def test_a_lean_forward_wrong_only_in_the_padded_layout_is_not_used(monkeypatch, caplog, tmp_path):
    # The check sample is unequal enough to be packed, so the padded layout (batches of near-equal texts) is
    # checked on its own against the model's vectors.
    monkeypatch.setattr(fast_module, "_LEAN_PASSED", set())
    real = LeanBert.encode

    def padded_wrong(self, *args, layout, **kwargs):
        out = real(self, *args, layout=layout, **kwargs)
        return out.flip(-1) if layout == "padded" else out

    monkeypatch.setattr(LeanBert, "encode", padded_wrong)
    with caplog.at_level(logging.WARNING, logger="ragsvc.embed.fast"):
        embedder = SentenceTransformerEmbedder(sort_by_length=True, precision="float32", backend="torch",
                                               lean_forward="traced", choice_dir=tmp_path)
    assert embedder.fast_path is not None and embedder.fast_path.lean is None
    assert "lean float32 forward differed" in caplog.text


def test_copies_of_one_model_are_checked_once_per_process_and_machine(monkeypatch, tmp_path):
    monkeypatch.setattr(fast_module, "_LEAN_PASSED", set())
    checks = []
    real = fast_module._check_batches
    monkeypatch.setattr(fast_module, "_check_batches", lambda *a: checks.append(1) or real(*a))
    first = SentenceTransformerEmbedder(sort_by_length=True, precision="float32", backend="torch",
                                        choice_dir=tmp_path)
    second = SentenceTransformerEmbedder(sort_by_length=True, precision="float32", backend="torch")
    assert len(checks) == 1
    # lean-folder-*: test_bert_folder.py's subject (a digest may itself start with "f", so no glob class)
    assert len([p for p in tmp_path.glob("lean-*.json") if not p.name.startswith("lean-folder-")]) == 1
    monkeypatch.setattr(fast_module, "_LEAN_PASSED", set())  # a restarted server: the machine remembers
    third = SentenceTransformerEmbedder(sort_by_length=True, precision="float32", backend="torch",
                                        choice_dir=tmp_path)
    assert len(checks) == 1 and third.fast_path is not None and third.fast_path.lean is not None
    assert third.fast_path.lean.traced is not None
    for embedder in (first, second):
        assert embedder.fast_path is not None and embedder.fast_path.lean is not None
        assert embedder.fast_path.lean.traced is not None
    assert first.fast_path.lean is not second.fast_path.lean  # each copy runs its own weights


def _autocast_reference(bert, ids, mask, types, pooling: str) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return _reference(bert, ids, mask, types, pooling).float()


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=1)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize(("batch", "tokens"), [(1, 2), (3, 9), (7, 40)])
def test_the_lean_bfloat16_forward_rounds_as_autocast_does(tiny_bert, pooling, batch, tokens):
    lean = LeanBert.from_module(tiny_bert, pooling, "bfloat16")
    assert lean.layers[0].qkv_weight.dtype == torch.bfloat16 and lean.layers[0].norm1_weight.dtype == torch.float32
    ids, mask, types = _batch(batch, tokens, seed=batch * 100 + tokens)
    with torch.inference_mode():
        mine = lean(ids, mask, types)
        padded = lean.encode(ids, mask, types, layout="padded")
    assert mine.dtype == torch.float32
    exact = _reference(tiny_bert, ids, mask, types, pooling)
    autocast = _autocast_reference(tiny_bert, ids, mask, types, pooling)
    # bfloat16 rounding moves each vector a little, as much as autocast's does, and the same way
    assert float(_cosines(mine, exact).min()) >= 0.999
    assert float(_cosines(mine, autocast).min()) >= 0.999
    assert float((mine - exact).abs().max()) <= 4 * float((autocast - exact).abs().max()) + 1e-3
    assert not torch.equal(mine, LeanBert.from_module(tiny_bert, pooling)(ids, mask, types))  # it is bfloat16
    torch.testing.assert_close(padded, mine, atol=1e-2, rtol=1e-2)  # packed (a padded batch) and padded


def test_the_bfloat16_graph_is_traced_and_matches_its_eager_forward(tiny_bert):
    lean = LeanBert.from_module(tiny_bert, "mean", "bfloat16")
    check = [_batch(3, 9, seed=1), _batch(1, 5, seed=2)]
    traced = trace(lean, check)
    assert traced is not None
    ids, mask, types = _batch(5, 23, seed=3)
    with torch.inference_mode():
        torch.testing.assert_close(traced(ids, mask, types), lean.encode(ids, mask, types, layout=layout_for(mask)),
                                   atol=1e-6, rtol=1e-5)


def _bf16_path(minilm) -> fast_module.FastPath:
    choice = fast_module.PrecisionChoice("bfloat16", "bfloat16: chosen by the test")
    return fast_module.FastPath(choice, 32, minilm.max_seq_length)


def test_a_bfloat16_path_runs_the_lean_forward_in_bfloat16(minilm, minilm_model, monkeypatch, tmp_path):
    monkeypatch.setattr(fast_module, "_LEAN_PASSED", set())
    plain = _bf16_path(minilm)
    path = fast_module.with_lean(minilm_model, plain, "traced", model_dir=resolve_model_path("minilm"),
                                 choice_dir=tmp_path)
    assert path.lean is not None and path.lean.precision == "bfloat16" and path.lean.traced is not None
    assert path.label == "bfloat16-lean-traced" + ("-packed" if path.lean.traced.packed_weights else "")
    saved = list(tmp_path.glob("lean-[!f]*.json"))  # lean-folder-*: the direct loading's own check, passed too
    assert len(saved) == 1 and '"precision": "bfloat16"' in saved[0].read_text()
    assert len(list(tmp_path.glob("lean-folder-*.json"))) == 1
    texts = bf16_texts()
    mine = fast_module.encode(minilm_model, texts, path)
    autocast = fast_module.encode(minilm_model, texts, plain)  # transformers' forward under bfloat16 autocast
    exact = fast_module.encode(minilm_model, texts, plain, precision="float32")
    assert np.einsum("nd,nd->n", mine, exact).min() >= fast_module.LEAN_BF16_MIN_COSINE
    assert np.einsum("nd,nd->n", mine, autocast).min() >= 0.9999
    # a float32 path of the same folder is checked on its own: the bfloat16 pass is no float32 pass
    f32 = fast_module.with_lean(minilm_model, replace(plain, choice=fast_module.PrecisionChoice("float32", "t")),
                                "eager", model_dir=resolve_model_path("minilm"), choice_dir=tmp_path)
    assert f32.lean is not None and f32.lean.precision == "float32"


def test_a_bfloat16_lean_forward_far_from_float32_is_not_used(minilm, minilm_model, monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(fast_module, "_LEAN_PASSED", set())
    real = LeanBert.encode

    def skewed(self, *args, **kwargs):  # slightly wrong: cosine ~0.99, which the precision check's bar would pass
        out = real(self, *args, **kwargs)
        direction = torch.nn.functional.normalize(torch.linspace(-1, 1, out.shape[1]), dim=0)
        return out + 0.15 * out.norm(dim=1, keepdim=True) * direction

    monkeypatch.setattr(LeanBert, "encode", skewed)
    with caplog.at_level(logging.WARNING, logger="ragsvc.embed.fast"):
        path = fast_module.with_lean(minilm_model, _bf16_path(minilm), "traced", model_dir=resolve_model_path("minilm"),
                                     choice_dir=tmp_path)
    assert path.lean is None and path.label == "bfloat16"
    assert "lean bfloat16 forward reached cosine" in caplog.text
    assert not list(tmp_path.glob("lean-*.json")) and not fast_module._LEAN_PASSED


needs_packing = pytest.mark.skipif(packed_linear.unavailable_reason() is not None,
                                   reason=f"{packed_linear.unavailable_reason()}")


@needs_packing
@pytest.mark.parametrize(("rows", "inputs", "outputs"), [(1, 32, 96), (7, 48, 32), (33, 384, 1536), (130, 1536, 384)])
def test_a_packed_linear_computes_what_the_plain_one_does(rows, inputs, outputs):
    g = torch.Generator().manual_seed(rows)
    weight = torch.randn(outputs, inputs, generator=g).bfloat16()
    bias = torch.randn(outputs, generator=g).bfloat16()
    x = torch.randn(rows, inputs, generator=g).bfloat16()
    packed = torch.jit.script(packed_linear.PackedLinear(weight, bias))
    with torch.inference_mode():
        torch.testing.assert_close(packed(x).float(), torch.nn.functional.linear(x, weight, bias).float(),
                                   atol=0.02, rtol=0.01)  # bfloat16 outputs: one rounding step apart at most
        assert packed(x[None]).shape == (1, rows, outputs)  # a padded batch's (batch, tokens, hidden) too


@needs_packing
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_the_graph_with_packed_weights_matches_the_eager_forward_in_each_layout(tiny_bert, pooling):
    lean = LeanBert.from_module(tiny_bert, pooling, "bfloat16")
    with torch.inference_mode():
        packed = traced_module._traced(lean, packed_linear.packed_linears(lean))
    assert packed.packed_weights
    for seed, (batch, tokens) in enumerate([(1, 5), (3, 9), (7, 40)]):
        ids, mask, types = _batch(batch, tokens, seed=seed)
        if batch > 1:
            mask[-1, 2:] = 0  # unequal enough to be packed: both graphs are checked on it
        assert packed.difference(lean, (ids, mask, types)) <= 1e-3
    assert lean.linear is bucketed_linear  # tracing worked on a copy: its own linear is still the plain one


@needs_packing
def test_a_traced_forward_asked_to_pack_its_weights_runs_them_packed(tiny_bert):
    lean = LeanBert.from_module(tiny_bert, "mean", "bfloat16")
    traced = trace(lean, [_batch(3, 9, seed=1)], pack_weights=True)
    assert traced is not None and traced.packed_weights
    ids, mask, types = _batch(5, 23, seed=3)
    with torch.inference_mode():
        cosines = _cosines(traced(ids, mask, types), lean.encode(ids, mask, types, layout=layout_for(mask)))
    assert cosines.min() >= traced_module.PACKED_MIN_COSINE
    assert trace(lean, [_batch(3, 9, seed=1)]).packed_weights is False  # not asked: plain


class SkewedLinear(packed_linear.PackedLinear):
    """A packing that computes the wrong function, consistently: only the plain forward tells."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "") * 1.5


@needs_packing
def test_packed_weights_that_disagree_with_the_plain_forward_are_not_used(tiny_bert, monkeypatch, caplog):
    monkeypatch.setattr(packed_linear, "PackedLinear", SkewedLinear)
    lean = LeanBert.from_module(tiny_bert, "mean", "bfloat16")
    with caplog.at_level(logging.WARNING, logger="ragsvc.embed.traced_forward"):
        traced = trace(lean, [_batch(3, 9, seed=1)], pack_weights=True)
    assert traced is not None and not traced.packed_weights
    assert "weights not packed (its vectors reached cosine" in caplog.text


def test_only_a_bfloat16_forward_on_a_cpu_with_amx_packs_its_weights(tiny_bert, monkeypatch):
    bf16, f32 = (LeanBert.from_module(tiny_bert, "mean", p) for p in ("bfloat16", "float32"))
    monkeypatch.setattr(fast_module, "_hardware", lambda: "model name\t: X\nflags\t\t: avx512f avx512_bf16 amx_bf16")
    assert fast_module._packs(bf16) and not fast_module._packs(f32)
    monkeypatch.setattr(fast_module, "_hardware", lambda: "model name\t: X\nflags\t\t: avx512f avx512_bf16")
    assert not fast_module._packs(bf16)
