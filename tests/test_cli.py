"""The `ragsvc` command in-process (typer's runner) on real files, the real store and MiniLM; the shape of the
command tree; and the rule that only `ragsvc.cli` talks to the terminal."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ragsvc.cli import app
from ragsvc.cli.progress import TqdmProgress

runner = CliRunner()


@pytest.fixture()
def corpus(tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "paged.md").write_text("# Paged attention\n\nKV cache blocks and block tables.\n")
    (folder / "sub" / "graphs.txt").write_text("HNSW graphs answer nearest neighbour queries.\n")
    (folder / "rows.jsonl").write_text(
        json.dumps({"id": "r1", "text": "DuckDB keeps tables in a single file.", "metadata": {"kind": "db"}}) + "\n"
        + json.dumps({"text": "Tree-sitter parses code."}) + "\n")
    (folder / "ignored.bin").write_bytes(b"\x00\x01")
    return folder


@pytest.mark.slow
def test_ingest_then_search_json(tmp_path, corpus, monkeypatch):
    data = str(tmp_path / "data")
    loaded: list[object] = []  # the local LLM costs seconds and gigabytes: a plain search must not load it
    monkeypatch.setattr("ragsvc.cli.search._local_generator", loaded.append)
    result = runner.invoke(app, ["ingest", str(corpus), "--collection", "docs", "--data-dir", data])
    assert result.exit_code == 0, result.output
    assert "4 documents" in result.output
    result = runner.invoke(app, ["search", "single file database", "-c", "docs", "-k", "2", "--json",
                                 "--data-dir", data])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output[result.output.index("{"):])
    assert body["hits"][0]["document_id"] == "r1"
    assert body["hits"][0]["metadata"]["kind"] == "db"
    assert loaded == []
    listed = runner.invoke(app, ["collections", "list", "--data-dir", data])
    assert "docs: 4 docs" in listed.output


def test_bad_inputs_exit_2_with_a_reason_and_write_nothing(tmp_path, corpus):
    data = tmp_path / "data"
    (corpus / "broken.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    result = runner.invoke(app, ["ingest", str(corpus), "--collection", "docs", "--data-dir", str(data)])
    assert result.exit_code == 2
    assert "broken.jsonl:2" in result.output and "invalid JSON" in result.output
    assert not (data / "catalog.duckdb").exists()
    result = runner.invoke(app, ["ingest", str(tmp_path / "missing"), "--collection", "docs", "--data-dir", str(data)])
    assert result.exit_code == 2 and "no such file" in result.output


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "quickstart", "ingest", "search", "collections"):
        assert command in result.output


PACKAGE = Path(__file__).resolve().parents[1] / "ragsvc"
TERMINAL_LIBRARIES = {"typer", "rich", "click", "tqdm"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_the_cli_package_imports_terminal_libraries():
    """The library reports progress through callbacks and errors through exceptions; drawing is the CLI's job."""
    offenders = {str(path.relative_to(PACKAGE)): sorted(_imported_roots(path) & TERMINAL_LIBRARIES)
                 for path in sorted(PACKAGE.rglob("*.py")) if path.relative_to(PACKAGE).parts[0] != "cli"}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_help_lists_every_group_and_command():
    """The command tree users see: top-level commands, and each group's subcommands."""
    root = typer.main.get_command(app)
    assert set(root.commands) == {"serve", "quickstart", "serve-model", "ingest", "search", "ask", "collections",
                                  "bench", "eval", "repo", "llm", "keys", "agents", "rerank"}
    groups = {name: set(root.commands[name].commands)
              for name in ("collections", "bench", "eval", "repo", "llm", "keys", "agents", "rerank")}
    assert groups == {"collections": {"create", "list", "delete", "compact"},
                      "bench": {"search", "serving", "code", "flare", "load", "chat", "agents", "filter", "ingest",
                                "soak", "speculative", "cluster", "quant-quality", "quant-kernels",
                                "decode-profile", "route-cost"},
                      "eval": {"run", "compare"}, "repo": {"index", "map", "search"},
                      "llm": {"generate", "decode-check"}, "keys": {"create", "list", "revoke"},
                      "agents": {"run", "chat", "interview", "reflect"}, "rerank": {"train"}}
    for group in groups:
        result = runner.invoke(app, [group, "--help"])
        assert result.exit_code == 0 and all(command in result.output for command in groups[group])


def test_help_loads_nothing_heavy():
    """`ragsvc --help` answers in a fraction of a second: the commands import torch, numpy, duckdb when run."""
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom ragsvc.cli import app\n"
            "assert CliRunner().invoke(app, ['bench', '--help']).exit_code == 0\n"
            "heavy = ('torch', 'numpy', 'duckdb', 'uvicorn', 'pydantic_settings')\n"
            "print(sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_help_shows_defaults_computed_at_run_time():
    """typer renders help as rich markup; the escaped `[default: ...]` texts must survive it."""
    result = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert "[default: 127.0.0.1]" in result.output and "RAGSVC_STORE__DATA_DIR" in result.output


def test_serve_model_takes_the_model_settings_and_reports_bad_values(monkeypatch):
    """serve-model builds its EngineConfig from RAGSVC_MODEL__* with the flags on top; a bad value exits 2."""
    import uvicorn

    def never(*args, **kwargs):
        raise AssertionError("serve-model started a server with a config it should have refused")

    monkeypatch.setattr(uvicorn.Server, "run", never)
    result = runner.invoke(app, ["serve-model", "--dtype", "float64"])
    assert result.exit_code == 2 and "dtype 'float64' is not supported" in result.output
    monkeypatch.setenv("RAGSVC_MODEL__DEVICE", "tpu")
    result = runner.invoke(app, ["serve-model"])
    assert result.exit_code == 2 and "device 'tpu' is not supported" in result.output


class _FakeBar:
    def __init__(self, **kwargs):
        self.total, self.n, self.closed, self.kwargs = kwargs["total"], 0, False, kwargs

    def update(self, step):
        self.n += step

    def close(self):
        self.closed = True


def test_tqdm_progress_follows_done_and_total_and_closes_at_the_end(monkeypatch):
    import tqdm

    bars = []
    monkeypatch.setattr(tqdm, "tqdm", lambda **kwargs: bars.append(_FakeBar(**kwargs)) or bars[-1])
    progress = TqdmProgress("index", unit="file")
    progress(0, 3)
    progress(2, 5)  # a walk that finds more files as it goes
    assert len(bars) == 1 and (bars[0].n, bars[0].total, bars[0].closed) == (2, 5, False)
    progress(5, 5)
    assert bars[0].closed and bars[0].kwargs["desc"] == "index" and bars[0].kwargs["unit"] == "file"
    progress.close()  # closing twice is harmless


@pytest.mark.parametrize(("args", "level"), [
    (["search", "tides", "-c", "notes"], "WARNING"), (["ingest", "docs/"], "WARNING"),
    (["collections", "list"], "WARNING"), (["keys", "list"], "WARNING"), (["repo", "map", "."], "WARNING"),
    (["serve", "--port", "9000"], "INFO"), (["bench", "load"], "INFO"), (["ask", "why?"], "INFO"),
    (["--help"], "INFO"), ([], "INFO"),
])
def test_commands_that_print_their_own_results_log_warnings_only_by_default(args, level):
    from ragsvc.cli import _default_log_level

    assert _default_log_level(args) == level
