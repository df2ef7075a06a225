"""`ragsvc serve` with RAGSVC_CLUSTER__ADDRESS: a cluster it cannot join stops the start-up, quickly and clearly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ragsvc.bench.server_process import free_port


def _serve(tmp_path, address: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAGSVC_CLUSTER__ADDRESS": address}
    args = [sys.executable, "-c", "from ragsvc.cli import main; main()", "serve", "--port", str(free_port()),
            "--data-dir", str(tmp_path / "data")]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_an_unreachable_cluster_stops_the_api_at_start(tmp_path):
    closed = free_port()  # bound then released: nothing listens there
    result = _serve(tmp_path, f"ray://127.0.0.1:{closed}")
    assert result.returncode != 0
    assert f"ray://127.0.0.1:{closed} is unreachable" in result.stderr
    assert "RAGSVC_CLUSTER__ADDRESS" in result.stderr


@pytest.mark.slow
def test_a_malformed_cluster_address_stops_the_api_at_start(tmp_path):
    result = _serve(tmp_path, "head:6379")
    assert result.returncode != 0
    assert "cluster address 'head:6379' is not one of" in result.stderr
