"""OpenMP thread counts per OS thread, and the worker that runs half of a split step."""

from __future__ import annotations

import gc
import threading

import pytest
import torch

from ragsvc.serving.layers import cpu_threads

lib = cpu_threads.load()
pytestmark = pytest.mark.skipif(lib is None, reason="no C++ compiler: steps are never split without one")


def _count_on_new_thread() -> int:
    seen: list[int] = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    return seen[0]


def test_a_thread_count_is_the_calling_threads_own_and_comes_back() -> None:
    assert lib is not None
    torch.set_num_threads(2)  # the autouse fixture puts the suite's setting back
    with cpu_threads.thread_count(lib, 1):
        assert torch.get_num_threads() == 1
        assert _count_on_new_thread() == 2  # new threads start from torch's process-wide setting
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="positive"):
        cpu_threads.set_thread_count(lib, 0)


def test_the_worker_runs_on_its_own_count_in_inference_mode() -> None:
    assert lib is not None
    torch.set_num_threads(2)
    worker = cpu_threads.HalfWorker(lib, 1)
    job = worker.submit(lambda: (torch.get_num_threads(), torch.is_inference_mode_enabled(),
                                 threading.current_thread().name))
    assert job.result() == (1, True, "ragsvc-half")
    assert torch.get_num_threads() == 2


def test_the_workers_error_is_raised_to_the_caller_and_it_keeps_serving() -> None:
    assert lib is not None
    worker = cpu_threads.HalfWorker(lib, 1)

    def boom() -> None:
        raise RuntimeError("half failed")

    with pytest.raises(RuntimeError, match="half failed"):
        worker.submit(boom).result()
    assert worker.submit(lambda: 7).result() == 7


def test_the_worker_thread_ends_when_the_worker_is_dropped() -> None:
    assert lib is not None
    worker = cpu_threads.HalfWorker(lib, 1)
    worker.submit(lambda: None).result()
    before = {t for t in threading.enumerate() if t.name == "ragsvc-half"}
    del worker
    gc.collect()
    after = {t for t in threading.enumerate() if t.name == "ragsvc-half"}
    assert len(after) < len(before)
