"""Loading a BERT folder without sentence-transformers: the real packaged MiniLM tokenised and embedded as
sentence-transformers does it, the folders the direct loading refuses, and the embedder's two starts (the
first checks and records, the next loads directly, in a fresh process that never imports the library)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ragsvc.embed import fast
from ragsvc.embed.bert_folder import BertFolderModel, folder_files, read_spec
from ragsvc.embed.embedder import SentenceTransformerEmbedder, resolve_model_path
from ragsvc.embed.precision import PrecisionChoice, save_choice

from .test_fast_embedder import TEXTS, bf16_texts

ODD_TEXTS = ["", " ", "\n\t", "  leading and trailing  ", "Ünïcödé çafé naïve", "日本語のテキスト", "emoji 🤖🚀",
             "\u200b zero width", "x" + "\u0301" * 5, "tabs\tand\nnewlines", "<p>&amp;</p>", "a" * 3000,
             "Protein kinase C phosphorylates serine 473. " * 40]
MINILM = resolve_model_path("minilm")


@pytest.fixture(scope="module")
def folder() -> BertFolderModel:
    spec, why = read_spec(MINILM)
    assert spec is not None, why
    return BertFolderModel(MINILM, spec)


def test_the_packaged_minilm_is_read_as_its_json_files_say():
    spec, _ = read_spec(MINILM)
    assert spec is not None
    assert (spec.pooling, spec.max_seq_length, spec.heads, spec.pad_token) == ("mean", 256, 12, "[PAD]")
    files = folder_files(MINILM)
    assert MINILM / "tokenizer.json" in files and MINILM / "1_Pooling/config.json" in files


def test_tokens_and_vectors_are_sentence_transformers_own(folder, minilm):
    model = minilm._model  # the embedder built without a cache folder loads sentence-transformers
    texts = TEXTS + ODD_TEXTS
    for group in (texts, texts[:3], *([t] for t in ODD_TEXTS)):
        theirs, mine = model.preprocess(group), folder.preprocess(group)
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            assert torch.equal(theirs[name], mine[name]), (name, group[:2])
    assert fast.token_counts(model, texts, 256) == folder.token_counts(texts)
    assert folder.get_embedding_dimension() == 384 and folder.max_seq_length == 256
    with torch.inference_mode():
        features = model.preprocess(texts)
        reference = model(features)["sentence_embedding"]
        pooled = folder(folder.preprocess(texts))["sentence_embedding"]
    normalize = torch.nn.functional.normalize  # the model ends in Normalize; the folder's caller normalises
    assert float((normalize(reference, dim=1) - normalize(pooled, dim=1)).abs().max()) < 1e-4


def _copy(tmp_path: Path) -> Path:
    """The packaged folder's small files copied, its weights linked (a folder to damage)."""
    dest = tmp_path / "minilm"
    shutil.copytree(MINILM, dest, ignore=shutil.ignore_patterns("model.safetensors"))
    (dest / "model.safetensors").symlink_to(MINILM / "model.safetensors")
    return dest


def _edit(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("damage, reason", [
    (lambda d: _edit(d / "sentence_bert_config.json", do_lower_case=True), "lowercases"),
    (lambda d: _edit(d / "config_sentence_transformers.json", prompts={"query": "q: "}), "prompts"),
    (lambda d: _edit(d / "config.json", model_type="xlm-roberta"), "model_type"),
    (lambda d: _edit(d / "config.json", hidden_act="gelu_new"), "gelu"),
    (lambda d: _edit(d / "1_Pooling/config.json", pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True),
     "pooling"),
    (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json"),
    (lambda d: (d / "modules.json").write_text("not json"), "modules.json"),
])
def test_folders_it_does_not_reproduce_are_refused_with_the_reason(tmp_path, damage, reason):
    folder = _copy(tmp_path)
    assert read_spec(folder)[0] is not None
    damage(folder)
    spec, why = read_spec(folder)
    assert spec is None and reason in why, why


def test_the_embedder_checks_once_then_loads_directly_with_the_same_vectors(tmp_path, caplog):
    choice_dir = tmp_path / "choices"
    first = SentenceTransformerEmbedder(precision="float32", sort_by_length=True, choice_dir=choice_dir)
    assert not isinstance(first._model, BertFolderModel)
    assert len(list(choice_dir.glob("lean-folder-*.json"))) == 1, "the check passed and was recorded"
    second = SentenceTransformerEmbedder(precision="float32", sort_by_length=True, choice_dir=choice_dir)
    assert isinstance(second._model, BertFolderModel)
    assert second.id == first.id and second.fast_path is not None and second.fast_path.label == "float32-lean-traced"
    texts = TEXTS + ODD_TEXTS
    np.testing.assert_allclose(second.embed_documents(texts), first.embed_documents(texts), atol=1e-5)
    np.testing.assert_allclose(second.embed_query("paged attention"), first.embed_query("paged attention"), atol=1e-5)
    for text in ODD_TEXTS + TEXTS[:4]:
        assert second.count_tokens(text) == first.count_tokens(text)
        assert second.token_offsets(text) == first.token_offsets(text)
    off = SentenceTransformerEmbedder(precision="float32", sort_by_length=True, choice_dir=choice_dir,
                                      lean_forward="off")
    assert not isinstance(off._model, BertFolderModel), "lean_forward off keeps transformers' forward"


def test_a_folder_changed_after_its_check_is_checked_again(tmp_path):
    folder, choice_dir = _copy(tmp_path), tmp_path / "choices"
    SentenceTransformerEmbedder(str(folder), precision="float32", sort_by_length=True, choice_dir=choice_dir)
    assert isinstance(SentenceTransformerEmbedder(str(folder), precision="float32", sort_by_length=True,
                                                  choice_dir=choice_dir)._model, BertFolderModel)
    _edit(folder / "tokenizer_config.json", model_max_length=128)  # replaced in place: a file the loader reads
    again = SentenceTransformerEmbedder(str(folder), precision="float32", sort_by_length=True, choice_dir=choice_dir)
    assert not isinstance(again._model, BertFolderModel)
    assert len(list(choice_dir.glob("lean-folder-*.json"))) == 2


def test_a_bfloat16_choice_made_before_loads_the_folder_directly_in_bfloat16(tmp_path, monkeypatch):
    # the automatic choice this machine made earlier (as on a CPU with bfloat16 instructions), read before the
    # model loads: the precision the direct loading must build its lean forward in
    texts = bf16_texts() + ODD_TEXTS  # read before the CPU is made to look bfloat16-capable
    monkeypatch.setattr(fast, "cpu_has_native_bf16", lambda: True)
    choice_dir = tmp_path / "choices"
    choice_dir.mkdir()
    save_choice(fast._choice_file(MINILM, "cpu", 32, choice_dir), PrecisionChoice("bfloat16", "chosen earlier"))
    first = SentenceTransformerEmbedder(precision="auto", sort_by_length=True, choice_dir=choice_dir)
    assert not isinstance(first._model, BertFolderModel)
    assert first.fast_path is not None and first.fast_path.label.startswith("bfloat16-lean-traced")
    def no_second_choice(*args, **kwargs):  # the choice read before loading is the one the folder was built for
        raise AssertionError("the precision was chosen again after the folder loaded")

    monkeypatch.setattr(fast, "choose", no_second_choice)
    second = SentenceTransformerEmbedder(precision="auto", sort_by_length=True, choice_dir=choice_dir)
    monkeypatch.undo()
    monkeypatch.setattr(fast, "cpu_has_native_bf16", lambda: True)
    assert isinstance(second._model, BertFolderModel) and second._model.lean.precision == "bfloat16"
    assert second.fast_path is not None and second.fast_path.label.startswith("bfloat16-lean-traced")
    np.testing.assert_allclose(second.embed_documents(texts), first.embed_documents(texts), atol=1e-5)
    # a float32 start is not served by the bfloat16 check, nor a start whose choice is not known yet
    assert not isinstance(SentenceTransformerEmbedder(precision="float32", sort_by_length=True,
                                                      choice_dir=choice_dir)._model, BertFolderModel)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 7)  # another thread count: another, unmade choice
    assert fast.cached_choice(MINILM, batch_size=32, choice_dir=choice_dir) is None


@pytest.mark.slow
def test_a_fresh_process_embeds_without_importing_sentence_transformers(tmp_path):
    choice_dir = tmp_path / "choices"
    first = SentenceTransformerEmbedder(precision="float32", sort_by_length=True, choice_dir=choice_dir)
    script = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from ragsvc.embed.embedder import SentenceTransformerEmbedder\n"
        "e = SentenceTransformerEmbedder(precision='float32', sort_by_length=True,\n"
        f"                                choice_dir=Path({str(choice_dir)!r}))\n"
        "v = e.embed_documents(['paged attention keeps blocks', 'Ünïcödé'])\n"
        "print(json.dumps({'modules': [m for m in ('sentence_transformers', 'transformers') if m in sys.modules],"
        " 'vectors': v.tolist()}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["modules"] == []
    expected = first.embed_documents(["paged attention keeps blocks", "Ünïcödé"])
    np.testing.assert_allclose(np.array(result["vectors"]), expected, atol=1e-5)
