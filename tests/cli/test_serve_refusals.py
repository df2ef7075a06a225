"""`ragsvc serve` and `ragsvc serve-model` refuse what they cannot use with one line and exit status 2, at once:
a data folder (before uvicorn starts; a failure inside the app's startup would print a traceback instead), a
port another process listens on (before the model loads, which took 30 s and more), a model that does not
exist (a traceback from the lifespan before), and a data folder whose store cannot load (the server used to
stay up answering 503 to everything, which at a terminal looks like a server that works)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragsvc.cli import app
from tests.api.conftest import free_port

runner = CliRunner()
HOLD = "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()"


def test_a_catalog_another_process_holds_is_refused_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(data / "catalog.duckdb")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = runner.invoke(app, ["serve", "--data-dir", str(data), "--port", "1"])
    finally:
        holder.communicate("")  # closing its stdin lets it exit
    assert result.exit_code == 2, result.output
    assert "Another ragsvc process" in result.output and "Traceback" not in result.output


def test_a_data_dir_that_is_a_file_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a folder")
    for command in (["serve", "--port", "1"], ["collections", "list"]):
        result = runner.invoke(app, [*command, "--data-dir", str(tmp_path / "data")])
        assert result.exit_code == 2 and "--data-dir" in result.output, (command, result.output)


@pytest.fixture()
def taken_port() -> Iterator[int]:
    """A port another socket listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_port_out_of_range_is_one_line_not_a_validation_traceback(tmp_path: Path) -> None:
    for command in (["serve"], ["serve-model"]):
        result = runner.invoke(app, [*command, "--port", "0", "--data-dir", str(tmp_path / "data")])
        assert result.exit_code == 2, result.output
        assert "api.port: Input should be greater than or equal to 1 (got 0); fix the --port option" in \
            _one_error_line(result.output)


@pytest.mark.parametrize("given", ["", "http://rag.example.com", "rag.example.com:8000", "a b"])
def test_an_allowed_host_that_could_never_match_a_host_header_is_refused(tmp_path: Path, given: str) -> None:
    for command in (["serve"], ["serve-model"]):
        result = runner.invoke(app, [*command, "--allowed-host", given, "--data-dir", str(tmp_path / "data")])
        assert result.exit_code == 2, result.output
        line = _one_error_line(result.output)
        assert f"allowed host {given!r} must be a host name or address alone" in line
        assert line.endswith("fix the --allowed-host option or RAGSVC_API__ALLOWED_HOSTS")


def test_host_names_addresses_and_the_wildcard_are_allowed_hosts() -> None:
    from ragsvc.config import ApiSettings

    names = ["rag.example.com", "10.0.0.5", "::1", "[::1]", "*"]
    assert ApiSettings(allowed_hosts=names).allowed_hosts == names


def _one_error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


@pytest.mark.parametrize("command", [["serve"], ["serve-model"], ["serve", "--with-model"]])
def test_a_port_in_use_is_refused_before_anything_loads(tmp_path: Path, taken_port: int, command: list[str]) -> None:
    from unittest import mock

    # nothing slow may run first: not the model (serve-model loaded it for 30 s before uvicorn found the port)
    loaded = AssertionError("the model was looked for or loaded")
    with mock.patch("ragsvc.serving.loader.resolve_model_dir", side_effect=loaded), \
            mock.patch("ragsvc.serving.engine.LLMEngine.from_config", side_effect=loaded):
        result = runner.invoke(app, [*command, "--port", str(taken_port), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.output)
    assert f"cannot listen on 127.0.0.1:{taken_port}" in line and "pass --port" in line


@pytest.mark.parametrize("command", [["serve-model", "--model", "/no/such/model"], ["serve", "--with-model"]])
def test_a_model_that_does_not_exist_is_one_line(tmp_path: Path, command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--port", str(free_port()), "--data-dir", str(tmp_path / "data")],
                           env={"RAGSVC_MODEL__MODEL": "/no/such/model.gguf"})
    assert result.exit_code == 2, result.output
    assert "/no/such/model" in _one_error_line(result.output) and "ragsvc never downloads models" in result.output


def test_a_device_that_is_not_there_is_one_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has the CUDA GPU the test asks for")
    result = runner.invoke(app, ["serve-model", "--device", "cuda", "--port", str(free_port()),
                                 "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2, result.output
    assert "torch sees no CUDA GPU" in _one_error_line(result.output)


@pytest.mark.slow
def test_a_store_that_cannot_load_stops_serve_instead_of_serving_503s(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = runner.invoke(app, ["collections", "create", "c", "--data-dir", str(data)])
    assert created.exit_code == 0, created.output
    (data / "indexes").write_text("a file where the index folder goes")
    command = [sys.executable, "-c", "from ragsvc.cli import main; main()", "serve", "--port", str(free_port()),
               "--data-dir", str(data)]
    # bounded: the old server stayed up; TimeoutExpired fails the test
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2, done.stderr
    line = _one_error_line(done.stdout + done.stderr)
    assert f"cannot load the data folder {data}" in line and "Not a directory" in line
