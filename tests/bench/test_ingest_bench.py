"""`ragsvc bench ingest` on a tiny SciFact-shaped corpus: the JSON shape, equal work, and vectors that agree."""

from __future__ import annotations

import json

import pytest

from ragsvc.bench.ingest import IngestBenchConfig, load_scifact, run_ingest_bench, to_markdown
from ragsvc.embed.embedder import SentenceTransformerEmbedder
from ragsvc.embed.fast import cpu_has_native_bf16
from ragsvc.embed.openvino_int8 import nncf_available
from ragsvc.embed.openvino_path import openvino_available

ABSTRACT = ("Alterations of the architecture of cerebral white matter in the developing human brain can affect "
            "cortical development and result in functional disabilities. A line scan diffusion-weighted magnetic "
            "resonance imaging sequence with diffusion tensor analysis was applied to measure the apparent "
            "diffusion coefficient and to delineate three-dimensional fiber architecture. ")


@pytest.fixture
def data_root(tmp_path):
    folder = tmp_path / "data" / "scifact"
    folder.mkdir(parents=True)
    rows = [{"_id": str(i), "title": f"Study {i} of white matter", "text": ABSTRACT * (1 + i % 4) + f"Cohort {i}."}
            for i in range(30)]
    rows.insert(3, {"_id": "empty", "title": "", "text": ""})  # skipped: nothing to embed
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return tmp_path / "data"


def test_load_takes_the_first_documents_and_names_a_missing_corpus(data_root, tmp_path):
    docs = load_scifact(data_root, 5)
    assert [d.id for d in docs] == ["0", "1", "2", "3", "4"]
    with pytest.raises(ValueError, match="scifact/corpus.jsonl"):
        load_scifact(tmp_path / "nowhere", 5)
    with pytest.raises(ValueError, match="num_docs"):
        IngestBenchConfig(data_root=data_root, num_docs=0)


def test_the_benchmark_reports_every_run_on_the_same_chunks(data_root, tmp_path):
    config = IngestBenchConfig(data_root=data_root, num_docs=8, threads=1)
    result = run_ingest_bench(config, work_dir=tmp_path,
                              embedder_factory=lambda: SentenceTransformerEmbedder(precision="auto",
                                                                                   sort_by_length=True))
    assert {"cpu", "git_sha", "reference", "runs", "end_to_end", "reingest", "targets"} <= set(result)
    assert result["num_docs"] == 8 and result["num_chunks"] > 8  # the longer abstracts span several chunks
    assert result["reference"]["name"] == "st-fp32" and result["reference"]["chunks_per_s"] > 0
    names = [r["name"] for r in result["runs"]]
    bf16 = cpu_has_native_bf16()  # emulated bfloat16 is skipped, and says so
    assert names == ["ragsvc-fp32-sorted", "ragsvc-fp32-sorted-lean-traced"] + (
        ["ragsvc-bf16-sorted"] if bf16 else []) + (
        ["ragsvc-openvino-sorted"] if openvino_available() else []) + (
        ["ragsvc-openvino-int8-sorted"] if nncf_available() else [])
    assert result["skipped_runs"] == ([] if bf16 else [{"name": "ragsvc-bf16-sorted",
                                                        "reason": "this CPU has no bfloat16 instructions"}])
    for row in result["runs"]:
        assert {"chunks_per_s", "docs_per_s", "tokens_per_s", "peak_rss_mb", "cosine_mean", "cosine_min"} <= set(row)
        assert row["cosine_mean"] >= 0.99 and row["cosine_min"] >= 0.98
    assert min(r["cosine_min"] for r in result["runs"][:2]) >= 0.9999  # float32 sorted: the same computation
    assert result["runs"][1]["precision"] == "float32-lean-traced"
    e2e = result["end_to_end"]
    assert e2e["num_chunks"] == result["num_chunks"] and e2e["cosine_mean"] >= 0.99
    assert result["reingest"]["unchanged_speedup"] > 0 and result["reingest"]["new_collection_speedup"] > 0
    assert [t["name"] for t in result["targets"]] == ["end_to_end_vs_st_fp32", "reingest_unchanged_speedup"]
    markdown = to_markdown(json.loads(json.dumps(result)))
    assert "ragsvc-bf16-sorted" in markdown and "Re-ingest unchanged" in markdown  # run or skipped, it is named
    assert str(data_root) not in json.dumps(result)  # no machine paths in a committed baseline
