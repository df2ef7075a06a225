"""`ragsvc collections create` with a placement: stored and listed, refused with the setting to change."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ragsvc.cli import app

runner = CliRunner()


def _create(data, *args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["collections", "create", *args, "--data-dir", str(data)], env=env)


@pytest.mark.slow
def test_create_stores_the_placement_and_list_shows_it(tmp_path, monkeypatch):
    monkeypatch.delenv("RAGSVC_CLUSTER__ADDRESS", raising=False)
    made = _create(tmp_path, "docs", "--index", '{"backend": "hnsw"}', "--shards", "3")
    assert made.exit_code == 0, made.output
    assert "shards=3" in made.output and "placement=in process" in made.output
    refused = _create(tmp_path, "remote", "--placement", "ray", "--replicas", "2", "--spread", "soft")
    assert refused.exit_code == 2
    assert "RAGSVC_CLUSTER__ADDRESS" in refused.output
    for args, says in ((["--index", "[1]"], "JSON object"), (["--index", "{"], "not JSON"),
                       (["--replicas", "2"], "replicas apply to placement mode ray"),
                       (["--placement", "cloud"], "placement mode 'cloud' is unknown")):
        bad = _create(tmp_path, "bad", *args)
        assert bad.exit_code == 2 and says in bad.output, bad.output
    listed = runner.invoke(app, ["collections", "list", "--data-dir", str(tmp_path)])
    [line] = listed.output.splitlines()
    assert line.startswith("docs: 0 docs, 0 chunks, ")
    assert line.endswith("index=hnsw shards=3 dims=all placement=in process")


@pytest.mark.slow
def test_create_on_ray_checks_the_cluster_it_joins(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("RAGSVC_CLUSTER__ADDRESS", "local")  # this process's Ray, already started
    strict = _create(tmp_path, "remote", "--placement", "ray", "--replicas", "2")
    assert strict.exit_code == 2 and "2 replicas of each shard on distinct nodes" in strict.output
    soft = _create(tmp_path, "remote", "--shards", "2", "--placement", "ray", "--replicas", "2", "--spread", "soft")
    assert soft.exit_code == 0, soft.output
    assert "placement=ray x2 (soft)" in soft.output
