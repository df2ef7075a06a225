"""The `pipeline` config kind: parsing, the errors it gives (file and line), model and generator resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragsvc.errors import InvalidInput
from ragsvc.evals.pipeline_config import PipelineConfig, RerankSpec, resolve_model
from ragsvc.evals.runner import RunOptions, run_suite
from ragsvc.evals.suite import load_suite
from ragsvc.retrieval.hyde import HydeOptions

TINY = Path(__file__).resolve().parents[2] / "eval" / "data" / "tiny"

SUITE = """\
name = "p"

[dataset]
path = "{path}"

[retrieval]
metrics = ["ndcg@10"]
depth = 10

[[configs]]
name = "dense"
kind = "pipeline"

[[configs]]
name = "hybrid"
kind = "pipeline"
mode = "hybrid"
fusion = "convex"
alpha = 0.3
candidates = 50

[[configs]]
name = "hyde"
kind = "pipeline"
mode = "hybrid"
hyde = {{ n = 2, template = "science", max_tokens = 32 }}
hyde_concurrency = 4
compare_to = "hybrid"

[[configs]]
name = "rerank"
kind = "pipeline"
mode = "hybrid"
rerank = {{ name = "embedder", candidates = 20, model = "gemma", query_prefix = "q: ", document_prefix = "d: " }}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(text.format(path=TINY))
    return path


def test_parses_each_stage_into_pipeline_options(tmp_path):
    suite = load_suite(_write(tmp_path, SUITE))
    dense, hybrid, hyde, rerank = suite.configs
    assert isinstance(dense, PipelineConfig) and dense.mode == "dense" and dense.needs_llm is None
    assert hybrid.options(k=10).fusion == "convex" and hybrid.options(k=10).alpha == 0.3
    assert hybrid.options(k=10).candidates == 50
    assert hyde.hyde == HydeOptions(n=2, template="science", max_tokens=32)
    assert hyde.needs_llm == "HyDE writes passages with it" and hyde.compare_to == "hybrid"
    assert hyde.hyde_concurrency == 4
    assert rerank.rerank == RerankSpec("embedder", 20, "gemma", "q: ", "d: ")
    assert RerankSpec("embedder", 5, "gemma", dtype="bfloat16").dtype == "bfloat16"
    options = rerank.options(k=10)
    assert options.rerank == "embedder" and options.rerank_candidates == 20
    # what results and checkpoints record: every setting, plain data
    assert rerank.to_dict()["rerank"]["model"] == "gemma" and hyde.to_dict()["hyde"]["n"] == 2


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [
        ('mode = "hybrid"\nfusion', 'mode = "hybird"\nfusion', 17, "mode 'hybird' is unknown"),
        ('fusion = "convex"', 'fusion = "max"', 18, "fusion 'max' is unknown"),
        ("alpha = 0.3", "alpha = 1.5", 19, "alpha must be in [0, 1]"),
        ("candidates = 50", "candidates = 0", 20, "candidates must be in [1, 1000]"),
        ("n = 2,", "n = 40,", 26, "hyde n must be in [1, 16]"),
        ("max_tokens = 32", "max_tokns = 32", 26, "unknown key 'max_tokns' in hyde"),
        ("hyde_concurrency = 4", "hyde_concurrency = 0", 27, "hyde_concurrency must be an integer"),
        ('compare_to = "hybrid"', 'compare_to = "hyde"', 28, "compare_to names another config"),
        ('compare_to = "hybrid"', 'compare_to = "nope"', 28, "compare_to 'nope' is not one of the configs"),
        ('name = "embedder", candidates = 20', 'name = "colbert", candidates = 20', 34, "unknown reranker 'colbert'"),
        ('model = "gemma", ', "", 34, "the 'embedder' reranker needs `model`"),
        ('model = "gemma"', 'model = "/opt/models/gemma"', 34, "is a machine path"),
        ('name = "embedder", candidates = 20, model = "gemma"', 'name = "llm", model = "gemma"', 34,
         "the 'llm' reranker uses the run's language model"),
        ('name = "dense"\nkind = "pipeline"', 'name = "dense"\nkind = "pipeline"\nbackend = "hnsw"', 13,
         "unknown key 'backend' in config 'dense' (kind 'pipeline')"),
        ('name = "dense"\nkind = "pipeline"', 'name = "dense"\nkind = "pipeline"\nmode = "lexical"\n'
         'hyde = {{ n = 2 }}', 14, "use it with mode dense or hybrid"),
    ],
)
def test_mistakes_name_file_and_line(tmp_path, old, new, line, message):
    path = _write(tmp_path, SUITE.replace(old, new, 1))
    with pytest.raises(InvalidInput) as info:
        load_suite(path)
    assert f"{path}:{line}:" in str(info.value), str(info.value)
    assert message in str(info.value), str(info.value)


def test_models_resolve_under_the_models_root_never_by_machine_path(tmp_path):
    assert resolve_model("minilm", None) == "minilm"  # packaged alias: no root needed
    with pytest.raises(InvalidInput, match="--models-root DIR.*RAGSVC_EVAL__MODELS_ROOT"):
        resolve_model("gemma", None)
    with pytest.raises(InvalidInput, match="not found under the models root"):
        resolve_model("gemma", tmp_path)
    (tmp_path / "gemma").mkdir()
    assert resolve_model("gemma", tmp_path) == str((tmp_path / "gemma").resolve())


def test_run_refuses_missing_generator_and_model_before_any_work(tmp_path):
    suite = load_suite(_write(tmp_path, SUITE))
    cache = tmp_path / "cache"
    with pytest.raises(InvalidInput, match=r"config 'hyde' needs a language model .*--generator-model smollm2"):
        run_suite(suite, options=RunOptions(out=tmp_path / "r.json", cache_dir=cache))
    no_hyde = load_suite(_write(tmp_path, SUITE.replace("hyde = {{ n = 2, template = \"science\", max_tokens = 32 }}",
                                                        "")))
    with pytest.raises(InvalidInput, match="model 'gemma' is read from a models root"):
        run_suite(no_hyde, options=RunOptions(out=tmp_path / "r.json", cache_dir=cache))
    assert not cache.exists()  # refused before the store was opened or anything embedded


def test_shipped_pipeline_suite_parses_without_machine_paths(tmp_path):
    (tmp_path / "scifact").mkdir()
    suite = load_suite(TINY.parents[1] / "suites" / "scifact-pipeline.toml", data_root=tmp_path)
    configs = {c.name: c for c in suite.configs}
    assert list(configs)[:3] == ["dense", "lexical", "hybrid"] and suite.baseline == "dense"
    assert configs["hybrid-hyde"].hyde == HydeOptions(n=4, template="science", temperature=0.7, max_tokens=96)
    rerank = configs["hybrid-rerank"].rerank
    assert rerank is not None and rerank.model == "embeddinggemma-300m" and rerank.candidates == 20
    assert rerank.query_prefix == "task: search result | query: " and rerank.document_prefix == "title: none | text: "
