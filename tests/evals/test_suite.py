"""Suite TOML parsing: the shipped suites load; mistakes name the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragsvc.errors import InvalidInput
from ragsvc.evals import kinds
from ragsvc.evals.index_config import IndexConfig
from ragsvc.evals.kinds import config_kind, known_kinds, register_kind
from ragsvc.evals.suite import load_suite

SUITES = Path(__file__).resolve().parents[2] / "eval" / "suites"

GOOD = """\
name = "t"

[dataset]
path = "{path}"

[retrieval]
metrics = ["ndcg@10", "recall@100"]

[[configs]]
name = "exact"
backend = "exact"

[[configs]]
name = "small"
backend = "hnsw"
dims = 64
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(text.format(path=SUITES.parent / "data" / "tiny"))
    return path


@pytest.fixture
def data_root(tmp_path):
    """A data root holding (empty) folders named like the shared BEIR datasets the shipped suites name."""
    for name in ("scifact", "hotpotqa_dev100", "cosqa"):
        (tmp_path / name).mkdir()
    return tmp_path


def test_shipped_hotpotqa_suite_compares_retrieval_modes_and_answer_strategies(data_root):
    suite = load_suite(SUITES / "hotpotqa.toml", data_root=data_root)
    assert [c.name for c in suite.configs] == ["exact", "dense", "lexical", "hybrid", "hybrid-convex"]
    assert suite.baseline == "dense" and "recall@2" in suite.retrieval.metrics
    assert suite.answer is not None and suite.answer.strategies == ("none", "single", "flare")
    assert suite.answer.config == "hybrid"


@pytest.mark.parametrize("name", ["scifact", "cosqa", "tiny"])
def test_shipped_suites_parse(name, data_root):
    suite = load_suite(SUITES / f"{name}.toml", data_root=data_root)
    assert suite.name == name
    assert not Path(suite.dataset_label).is_absolute()
    assert suite.baseline == "exact"
    if name != "tiny":
        names = [c.name for c in suite.configs]
        assert {"exact", "hnsw", "faiss-ivf", "adaptive-64", "adaptive-128", "adaptive-192"} <= set(names)
        dims = {c.name: c.index.dims for c in suite.configs if isinstance(c, IndexConfig)}
        assert [dims[f"adaptive-{d}"] for d in (64, 128, 192)] == [64, 128, 192]


def test_named_dataset_needs_a_data_root_and_says_how_to_give_one(data_root, tmp_path):
    with pytest.raises(InvalidInput, match=r"scifact.toml:\d+: .*--data-root DIR.*RAGSVC_EVAL__DATA_ROOT"):
        load_suite(SUITES / "scifact.toml")
    with pytest.raises(InvalidInput, match="not found under the data root"):
        load_suite(SUITES / "scifact.toml", data_root=tmp_path / "elsewhere")
    suite = load_suite(SUITES / "scifact.toml", data_root=data_root)
    assert suite.dataset_path == (data_root / "scifact").resolve() and suite.dataset_label == "scifact"


def test_dataset_takes_a_name_or_a_path_not_both(tmp_path):
    path = tmp_path / "both.toml"
    path.write_text('[dataset]\nname = "scifact"\npath = "x"\n\n[[configs]]\nname = "exact"\nbackend = "exact"\n')
    with pytest.raises(InvalidInput, match="exactly one of `name`"):
        load_suite(path, data_root=tmp_path)


def test_relative_dataset_path_resolves_against_the_suite_file():
    suite = load_suite(SUITES / "tiny.toml")
    assert suite.dataset_path == (SUITES.parent / "data" / "tiny").resolve()


def test_good_suite_and_defaults(tmp_path):
    suite = load_suite(_write(tmp_path, GOOD))
    assert suite.retrieval.depth == 100 and suite.retrieval.chunking == "document"
    small = suite.configs[1]
    assert isinstance(small, IndexConfig) and small.index.backend == "hnsw" and small.index.dims == 64


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [
        ('dims = 64', 'dims = 64\nef_serch = 10', 17, "unknown key 'ef_serch' in config 'small'"),
        ('metrics = ["ndcg@10", "recall@100"]', 'metrics = ["ndcg@10"]\ntop_k = 3', 8,
         "unknown key 'top_k' in [retrieval]"),
        ('metrics = ["ndcg@10", "recall@100"]', 'metrics = ["map@10"]', 7, "unknown metric 'map@10'"),
        ('backend = "hnsw"', 'backend = "annoy"', 15, "index backend 'annoy' is unknown"),
        ('name = "small"', 'name = "small"\nkind = "hyde"', 15, "unknown config kind 'hyde'"),
        ('name = "small"', 'name = "exact"', 14, "duplicate config name 'exact'"),
        ('name = "t"', 'name = "t"\nshards = 2', 2, "unknown key 'shards'"),
        ('metrics = ["ndcg@10", "recall@100"]', 'metrics = ["recall@100"]\ndepth = 10', 8,
         "depth 10 is below the largest metric cut-off 100"),
    ],
)
def test_mistakes_name_file_and_line(tmp_path, old, new, line, message):
    path = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(InvalidInput) as info:
        load_suite(path)
    assert f"{path}:{line}:" in str(info.value), str(info.value)
    assert message in str(info.value)


def test_syntax_error_and_missing_file(tmp_path):
    with pytest.raises(InvalidInput, match="suite file not found"):
        load_suite(tmp_path / "none.toml")
    path = _write(tmp_path, GOOD + "\n[[configs]\n")
    with pytest.raises(InvalidInput) as info:
        load_suite(path)
    assert f"{path}:18: invalid TOML: Expected ']]'" in str(info.value)


def test_registry_accepts_new_kinds(monkeypatch):
    monkeypatch.setattr(kinds, "_KINDS", dict(kinds._KINDS))  # keep the registration local to this test

    class EchoKind:
        name = "echo-test"

        def parse(self, table, *, where):
            return IndexConfig(name=table["name"], kind="echo-test")

        def prepare(self, config, ctx):
            raise NotImplementedError

    register_kind(EchoKind())
    assert "echo-test" in known_kinds() and config_kind("echo-test") is not None
    with pytest.raises(ValueError, match="already registered"):
        register_kind(EchoKind())


def test_cli_run_reports_suite_errors_with_file_and_line(tmp_path):
    from typer.testing import CliRunner

    from ragsvc.cli.eval import app

    path = _write(tmp_path, GOOD.replace("dims = 64", "dims = 64\nbogus = 1"))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out.json"), "--no-progress"])
    assert result.exit_code == 2
    assert "suite.toml:17" in result.output.replace("\n", "") and "unknown key 'bogus'" in result.output
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("out", ["out.txt", "folder"])
def test_cli_run_refuses_an_out_path_that_is_no_json_file(tmp_path, out):
    from typer.testing import CliRunner

    from ragsvc.cli.eval import app

    (tmp_path / "folder").mkdir()
    path = _write(tmp_path, GOOD)
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / out), "--no-progress"])
    assert result.exit_code == 2 and "must be a file path ending in .json" in result.output


def test_a_suite_that_is_not_utf8_is_named(tmp_path):
    (tmp_path / "s.toml").write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(InvalidInput, match=r"s.toml: not UTF-8 text \(at byte offset 11\)"):
        load_suite(tmp_path / "s.toml")
