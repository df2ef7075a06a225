"""One real local Ray (2 CPUs) for the cluster tests that need it, started once for the package (~6 s)."""

from __future__ import annotations

import pytest

from ragsvc.cluster.placement import ClusterAddress
from ragsvc.cluster.runtime import connect, shutdown


@pytest.fixture(scope="package")
def cluster():
    pytest.importorskip("ray")
    info = connect(ClusterAddress.parse("local"), num_cpus=2)
    yield info
    shutdown()
