"""Matryoshka adaptive retrieval on real MiniLM vectors (not MRL-trained, hence the PCA rotation)."""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from ragsvc.index.collection_index import CollectionIndex
from ragsvc.index.exact_shard import ExactShard
from ragsvc.index.spec import IndexSpec
from tests.index.corpus import recall

MODULES = ("argparse", "asyncio/base_events", "collections/__init__", "dataclasses", "email/message", "inspect",
           "json/__init__", "logging/__init__", "pathlib", "shutil", "subprocess", "typing", "unittest/case",
           "urllib/parse", "zipfile", "tarfile", "datetime", "decimal", "fractions", "statistics")


def _docstring_windows(limit: int) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    for name in MODULES:
        path = root / f"{name}.py"
        if not path.is_file():
            path = root / name / "__init__.py"
        if not path.is_file():
            continue
        for node in ast.walk(ast.parse(path.read_text(errors="ignore"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
                words = (ast.get_docstring(node) or "").split()
                texts.extend(" ".join(words[i : i + 20]) for i in range(0, len(words) - 7, 20))
    return list(dict.fromkeys(texts))[:limit]


@pytest.mark.slow
def test_rotated_prefix_with_int8_rescoring_matches_exact_full_width(minilm):
    texts = _docstring_windows(1300)
    assert len(texts) >= 1200, "not enough stdlib docstrings found"
    vectors = minilm.embed_documents(texts).astype(np.float32)  # (n, 384), unit norm
    queries, corpus = vectors[:100], vectors[100:]
    ids = np.arange(1, len(corpus) + 1, dtype=np.int64)
    oracle = ExactShard(corpus.shape[1])
    oracle.add(ids, corpus)
    truth = oracle.search(queries, 10).ids

    def measured(spec: IndexSpec) -> float:
        index = CollectionIndex.from_arrays(corpus, spec=spec)
        return recall(np.asarray([index.search(q, 10).ids for q in queries]), truth)

    rotated = measured(IndexSpec(dims=64, shortlist=100))
    raw_prefix = measured(IndexSpec(dims=64, shortlist=100, rotate=False))
    assert rotated >= 0.97
    assert rotated >= raw_prefix
    assert measured(IndexSpec(backend="faiss_hnsw", dims=64, prefix_quant="sq8", shortlist=100)) >= 0.95
    # The README's small-memory layout: 8-bit graph on the rotated 256-d prefix (native walk), int8 tail rescoring.
    small = IndexSpec(backend="faiss_hnsw", dims=256, prefix_quant="sq8", rescore_tail_only=True, shortlist=160)
    assert measured(small) >= 0.97
