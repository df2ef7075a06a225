"""OpenMP thread counts per OS thread, and a worker thread that runs half of a step on its own cores.

Why: with OMP_WAIT_POLICY=PASSIVE (what `ragsvc` runs with, so spinning threads do not starve each other on
small machines) every parallel region of a forward first wakes its sleeping OpenMP threads, and a prompt
step's forward has hundreds of regions (each GEMM, norm, rotary, attention segment). Run instead as two
halves (the step's sequences split in two), each on its own OS thread with half the OpenMP threads, a 2-core
machine runs every region on one thread: no region wakes anyone, and the two halves meet once per step.

The count is OpenMP's per-thread setting (`omp_set_num_threads` changes the calling thread's only), read by
torch's, oneDNN's and our kernels' parallel regions alike; `torch.set_num_threads` would instead change the
process-wide default every new thread starts from. The setter is compiled from cpu_threads.cpp against the
process's libgomp like every kernel here (cpu_build.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import torch

from ragsvc.serving.layers.cpu_build import load_library

T = TypeVar("T")


@functools.cache
def load() -> ctypes.CDLL | None:
    """The compiled setter (built on first use, then cached on disk); None when it cannot be built."""
    return load_library("threads", "cpu_threads.cpp",
                        {"set_thread_count": [ctypes.c_int64, ctypes.POINTER(ctypes.c_int64)]})


def set_thread_count(lib: ctypes.CDLL, threads: int) -> int:
    """Give the calling OS thread `threads` OpenMP threads (others keep theirs); returns its previous count."""
    if threads <= 0:
        raise ValueError(f"threads must be positive, got {threads}")
    torch.get_num_threads()  # torch sets each thread's count on its first use: let it happen before ours
    previous = ctypes.c_int64()
    lib.set_thread_count(threads, ctypes.byref(previous))
    return previous.value


@contextlib.contextmanager
def thread_count(lib: ctypes.CDLL, threads: int) -> Iterator[None]:
    """The calling thread runs the block on `threads` OpenMP threads, then gets its own count back."""
    previous = set_thread_count(lib, threads)
    try:
        yield
    finally:
        set_thread_count(lib, previous)


class _Job(Generic[T]):
    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None

    def result(self) -> T:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]  # set whenever error is not


def _serve(lib: ctypes.CDLL, threads: int, jobs: queue.SimpleQueue[_Job[object] | None]) -> None:
    set_thread_count(lib, threads)
    while (job := jobs.get()) is not None:
        try:
            with torch.inference_mode():
                job.value = job.fn()
        except BaseException as e:  # handed to the caller, which raises it on its own thread
            job.error = e
        job.done.set()


def _stop(jobs: queue.SimpleQueue[_Job[object] | None], thread: threading.Thread) -> None:
    """End the worker and wait for it: a thread still leaving while the interpreter shuts down is aborted
    mid-exit (C++ terminate)."""
    jobs.put(None)
    if thread is not threading.current_thread():
        thread.join(timeout=10)


class HalfWorker:
    """One daemon thread that runs submitted callables one at a time, on `threads` OpenMP threads of its own
    and under inference mode. The thread holds no reference to this object; it ends when the object is collected,
or at the latest at interpreter exit."""

    def __init__(self, lib: ctypes.CDLL, threads: int) -> None:
        self._jobs: queue.SimpleQueue[_Job[object] | None] = queue.SimpleQueue()
        thread = threading.Thread(target=_serve, args=(lib, threads, self._jobs), name="ragsvc-half", daemon=True)
        thread.start()
        weakref.finalize(self, _stop, self._jobs, thread)

    def submit(self, fn: Callable[[], T]) -> _Job[T]:
        """Start `fn` on the worker; `.result()` of the returned job waits for it (and raises what it raised)."""
        job = _Job(fn)
        self._jobs.put(job)  # type: ignore[arg-type]  # the queue holds jobs of any result type
        return job
