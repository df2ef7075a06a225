"""A real `ragsvc serve` in a child process: what load benchmarks and resource tests drive over HTTP.

A child process, not a thread, so its memory (RSS, peak RSS) is measured apart from the driver's, and a
benchmark's client-side work does not share the server's interpreter lock.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from ragsvc.bench.process import stop_process

START_TIMEOUT_S = 300.0
_LAUNCH = "from ragsvc.cli import main; main()"


@dataclass(frozen=True)
class ServerProcess:
    url: str
    pid: int
    _proc: subprocess.Popen = field(repr=False, compare=False)

    def terminate(self, *, timeout_s: float = 120.0) -> int:
        """SIGTERM, then its exit status once it has stopped (uvicorn re-raises the signal: -SIGTERM is normal)."""
        self._proc.terminate()
        return self._proc.wait(timeout=timeout_s)

    def rss_bytes(self) -> int:
        """Resident memory now (Linux /proc)."""
        return _status_kb(self.pid, "VmRSS") * 1024

    def peak_rss_bytes(self) -> int:
        """Highest resident memory since start or since the last `reset_peak_rss`."""
        return _status_kb(self.pid, "VmHWM") * 1024

    def reset_peak_rss(self) -> None:
        """Start the peak over from the current RSS (Linux: writing 5 to /proc/PID/clear_refs)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_process(data_dir: Path, *, env: Mapping[str, str] | None = None, sample: bool = False,
                  start_timeout_s: float = START_TIMEOUT_S, output: IO[bytes] | None = None) -> Iterator[ServerProcess]:
    """Start `ragsvc serve` on a free loopback port over `data_dir`; yield once /health answers 200; stop it
    (SIGTERM: indexes are saved on the way out) when the block ends. Its stdout and stderr go to `output`
    when given; else stdout is dropped and stderr is this process's."""
    port = free_port()
    args = [sys.executable, "-c", _LAUNCH, "serve", "--data-dir", str(data_dir), "--port", str(port)]
    if sample:
        args.append("--sample")
    child_env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAGSVC_LOG_LEVEL": "WARNING", **(env or {})}
    proc = subprocess.Popen(args, env=child_env, stdout=output or subprocess.DEVNULL,
                            stderr=subprocess.STDOUT if output else None)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(proc, url, start_timeout_s)
        yield ServerProcess(url=url, pid=proc.pid, _proc=proc)
    finally:
        stop_process(proc)


def _wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=5) as client:
        while time.monotonic() < deadline:  # waits for readiness (model and index loading), polled
            if proc.poll() is not None:
                raise RuntimeError(f"ragsvc serve exited with status {proc.returncode} before it was ready")
            try:
                if client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"ragsvc serve at {url} was not ready within {timeout_s:.0f} s")


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field} line")
