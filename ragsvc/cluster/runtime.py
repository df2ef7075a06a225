"""Reaching a Ray cluster: start a local one or join one, with a bounded wait, and list its alive nodes.

Joining is bounded twice: a TCP probe of `ray://host:port` (seconds, so a wrong host or port fails fast with
the address in the message), then `ray.init` in a worker thread given `timeout_s`, because Ray Client retries
a silent head for minutes. The error names RAGSVC_CLUSTER__ADDRESS, the setting to change.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ragsvc.cluster.placement import DEFAULT_DEADLINE_MS, ClusterAddress, check_deadline_ms
from ragsvc.config import ClusterSettings
from ragsvc.errors import NotReady

DEFAULT_CONNECT_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    address: ClusterAddress
    node_ids: tuple[str, ...]
    """Alive nodes, in Ray's order; strict placement pins replica r of shard i to node (i + r) mod n."""
    num_cpus: float
    deadline_ms: float = DEFAULT_DEADLINE_MS
    """Searches of ray-placed collections give their shards this long unless the request says otherwise."""
    hedge_ms: float | None = None
    """When a shard's next replica is also asked; None: half of each request's deadline."""

    def __post_init__(self) -> None:
        check_deadline_ms(self.deadline_ms)
        if self.hedge_ms is not None:
            check_deadline_ms(self.hedge_ms)

    @property
    def num_nodes(self) -> int:
        return len(self.node_ids)


def connect(address: ClusterAddress, *, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
            num_cpus: int | None = None) -> ClusterInfo:
    """Start (`local`) or join (`auto`, `ray://`) Ray in this process; reuse it when already initialised."""
    import ray

    if address.kind == "client":
        _probe(address, timeout_s=min(timeout_s, 5.0))
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address.kind == "local":
            kwargs["address"] = "local"  # a new instance, even where `ray start` runs one (init would join it)
            kwargs["num_cpus"] = num_cpus
            kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": _package_root()}}
        else:
            kwargs["address"] = address.value
        if address.kind == "local":
            ray.init(**kwargs)  # starts here: nothing to wait for but our own processes
        else:
            _init_within(ray, kwargs, address, timeout_s)
    return cluster_info(address)


def connect_from_settings(section: ClusterSettings) -> ClusterInfo | None:
    """Join the cluster RAGSVC_CLUSTER__ADDRESS names, with the section's search deadline and hedge; None (and
    Ray never imported) when it is unset."""
    if section.address is None:
        return None
    info = connect(ClusterAddress.parse(section.address), timeout_s=section.connect_timeout_s)
    return replace(info, deadline_ms=section.deadline_ms, hedge_ms=section.hedge_ms)


def cluster_info(address: ClusterAddress) -> ClusterInfo:
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    return ClusterInfo(address, tuple(str(n["NodeID"]) for n in nodes), cpus)


def _init_within(ray: Any, kwargs: dict[str, Any], address: ClusterAddress, timeout_s: float) -> None:
    failure: list[BaseException] = []

    def start() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            failure.append(exc)

    thread = threading.Thread(target=start, name="ray-init", daemon=True)
    thread.start()
    thread.join(timeout_s)
    where = address.value or "local"
    if thread.is_alive():
        raise NotReady(f"the Ray cluster at {where} did not answer within {timeout_s:.0f} s; check that its head "
                       "runs and RAGSVC_CLUSTER__ADDRESS points at it, or use local")
    if failure:
        raise NotReady(f"cannot join the Ray cluster at {where} ({failure[0]}); start it (`ray start --head`) or "
                       "set RAGSVC_CLUSTER__ADDRESS to local") from failure[0]


def _probe(address: ClusterAddress, *, timeout_s: float) -> None:
    assert address.value is not None
    host, _, port = address.value.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise NotReady(f"the Ray cluster at {address.value} is unreachable ({exc}); start its head with "
                       "`ray start --head --ray-client-server-port PORT` or fix RAGSVC_CLUSTER__ADDRESS") from exc


def _package_root() -> str:
    """The folder holding this ragsvc, first on the local workers' path: they import the driver's own code
    (a source checkout is not always the installed copy). Joined clusters run the ragsvc installed on them."""
    import ragsvc

    root = str(Path(ragsvc.__file__).resolve().parents[1])
    rest = os.environ.get("PYTHONPATH")
    return root if not rest else os.pathsep.join([root, rest])


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
