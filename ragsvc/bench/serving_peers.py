"""The peers ragsvc's engine is measured against, in the same run on the same workload:

- `hf_sequential`: HF transformers `generate`, one request at a time (what a naive server does);
- `hf_batch`: HF `generate` on left-padded batches of `concurrency` requests (static batching: a batch runs
  until its longest request is done, and only each request's own tokens are counted);
- `llama_cpp`: llama.cpp's own `llama-server` (continuous batching over `--parallel` slots) on the same GGUF,
  same thread count, driven over HTTP by `concurrency` concurrent streaming clients.

Every peer generates exactly each request's `max_tokens` (EOS suppressed), greedily.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import torch

from ragsvc.bench.process import stop_process
from ragsvc.bench.serving_workload import BenchRequest, RequestTiming

logger = logging.getLogger(__name__)


class _StepClock:
    """A StoppingCriteria that only records when each decoding step ends (HF calls it once per new token)."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if input_ids.is_cuda:  # the step is queued, not done, until the GPU says so
            torch.cuda.synchronize(input_ids.device)
        self.marks.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)  # (batch,) never stop


def load_hf_model(model_dir: Path, dtype: torch.dtype, device: torch.device | str = "cpu") -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    model.to(device)  # type: ignore[arg-type]  # transformers' stubs read .to as a decorator
    return model.eval()


def _hf_generate(model: Any, batch: list[BenchRequest], pad_id: int) -> tuple[float, _StepClock]:
    """Left-padded greedy generate of `batch`; returns the start time and the per-step clock."""
    from transformers import StoppingCriteriaList

    width = max(len(r.prompt_ids) for r in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # (batch, width)
    mask = torch.zeros((len(batch), width), dtype=torch.long)  # (batch, width)
    for row, req in enumerate(batch):
        ids[row, width - len(req.prompt_ids):] = torch.tensor(req.prompt_ids)
        mask[row, width - len(req.prompt_ids):] = 1
    ids, mask = ids.to(model.device), mask.to(model.device)
    max_new = max(r.max_tokens for r in batch)
    clock = _StepClock()
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, min_new_tokens=max_new,
                       do_sample=False, pad_token_id=pad_id, stopping_criteria=StoppingCriteriaList([clock]))
    return start, clock


def run_hf(model: Any, requests: list[BenchRequest], *, batch_size: int, pad_id: int) -> list[RequestTiming]:
    """Batches of `batch_size` in order (1 = sequential). A request of a later batch starts when its batch
    starts: with static batching it cannot be admitted earlier."""
    timings = []
    for first in range(0, len(requests), batch_size):
        batch = requests[first:first + batch_size]
        start, clock = _hf_generate(model, batch, pad_id)
        for req in batch:
            timings.append(RequestTiming(start=start, first_token=clock.marks[0],
                                         end=clock.marks[req.max_tokens - 1], num_output_tokens=req.max_tokens))
    return timings


# --- llama.cpp ----------------------------------------------------------------------------------------


def find_llama_server(explicit: str | None) -> str | None:
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return shutil.which("llama-server")


def gguf_quantisation(gguf: Path) -> str:
    """The GGUF's file type, e.g. "q4_1" (what llama.cpp computes in)."""
    import gguf as gguf_lib

    reader = gguf_lib.GGUFReader(gguf)
    field = reader.fields["general.file_type"]
    return gguf_lib.LlamaFileType(int(field.parts[field.data[0]][0])).name.removeprefix("MOSTLY_").lower()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def llama_build_info(binary: str) -> str:
    """How the llama-server binary was built: its --version line and, when a CMakeCache.txt sits in a folder
    near it (the build tree, or `build/` beside an install prefix), the flags that change its speed."""
    parts: list[str] = []
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
        parts.append(" ".join((done.stdout + done.stderr).split())[:300])
    except (OSError, subprocess.SubprocessError) as err:
        parts.append(f"--version failed: {err}")
    keys = ("CMAKE_BUILD_TYPE", "GGML_NATIVE", "GGML_AVX512", "GGML_AMX", "GGML_OPENMP", "BUILD_SHARED_LIBS",
            "CMAKE_C_COMPILER:", "CMAKE_C_FLAGS:")
    for folder in list(Path(binary).resolve().parents)[:4]:
        for cache in (folder / "CMakeCache.txt", folder / "build" / "CMakeCache.txt"):
            if cache.is_file():
                lines = [ln for ln in cache.read_text(errors="replace").splitlines() if ln.startswith(keys)]
                parts.append("cmake: " + ", ".join(lines))
                compiled = cpu_backend_flags(cache.parent)
                if compiled:  # with GGML_NATIVE=ON the GGML_AVX512* switches above do not apply: say what did
                    parts.append(f"ggml-cpu compiled with {compiled}")
                return "; ".join(parts)
    return "; ".join(parts)


def cpu_backend_flags(build_dir: Path) -> str:
    """The optimisation and target options ggml's CPU backend was compiled with (`-O3 -march=native -fopenmp`,
    `-mno-amx-tile` ...), read from the build tree: its flags.make (Makefiles) or its build.ninja (Ninja); empty
    when there is neither."""
    line = ""
    try:
        text = (build_dir / "ggml" / "src" / "CMakeFiles" / "ggml-cpu.dir" / "flags.make").read_text(errors="replace")
        line = next((ln for ln in text.splitlines() if ln.startswith("C_FLAGS")), "")
    except OSError:
        try:
            text = (build_dir / "build.ninja").read_text(errors="replace")
        except OSError:
            return ""
        # the FLAGS line of the first C object built for the ggml-cpu target
        block = re.search(r"^build ggml/src/CMakeFiles/ggml-cpu\.dir/\S+\.c\.o:.*?^  FLAGS = (.*?)$", text,
                          flags=re.MULTILINE | re.DOTALL)
        line = "= " + block.group(1) if block else ""
    return " ".join(f for f in line.partition("=")[2].split() if f.startswith(("-O", "-m", "-fopenmp")))


@contextlib.contextmanager
def llama_server(binary: str, gguf: Path, *, threads: int, parallel: int, ctx_per_slot: int,
                 log_path: Path, poll: int = 50, startup_timeout_s: float = 180.0) -> Iterator[str]:
    """Run llama-server with `parallel` continuous-batching slots; yields its base URL once /health is 200."""
    port = _free_port()
    cmd = [binary, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads),
           "--threads-batch", str(threads), "--parallel", str(parallel), "--cont-batching",
           "--ctx-size", str(parallel * ctx_per_slot), "--poll", str(poll)]
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + startup_timeout_s
            while not _healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"llama-server did not start; see {log_path}")
                time.sleep(0.2)
            yield url
        finally:
            stop_process(proc)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


async def _llama_one(client: httpx.AsyncClient, req: BenchRequest, start: float | None = None) -> RequestTiming:
    """One streamed completion; `start` = the request's arrival (open loop), else now."""
    body = {"prompt": req.prompt_ids, "n_predict": req.max_tokens, "temperature": 0.0, "ignore_eos": True,
            "stream": True}
    timing = RequestTiming(start=time.perf_counter() if start is None else start)
    count = 0
    async with client.stream("POST", "/completion", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            now = time.perf_counter()
            if event.get("stop"):
                timing.end = now
                timing.num_output_tokens = int(event.get("tokens_predicted") or count)
                break
            count += 1
            if timing.first_token is None:
                timing.first_token = now
    return timing


async def drive(concurrency: int, requests: list[BenchRequest],
                one: Callable[[BenchRequest, float | None], Awaitable[RequestTiming]],
                arrivals: list[float] | None = None) -> list[RequestTiming]:
    """Closed loop (`arrivals` None): `concurrency` clients, each sending its next request as soon as the last
    one ends. Open loop: request i is sent once `arrivals[i]` seconds have passed and fewer than `concurrency`
    are in flight, its clock started at its arrival (serving_arrivals.py)."""
    if arrivals is None:
        pending = list(reversed(requests))
        timings: list[RequestTiming] = []

        async def client() -> None:
            while pending:
                timings.append(await one(pending.pop(), None))

        await asyncio.gather(*(client() for _ in range(concurrency)))
        return timings
    t0 = time.perf_counter()
    slots = asyncio.Semaphore(concurrency)

    async def arriving(req: BenchRequest, offset: float) -> RequestTiming:
        await asyncio.sleep(max(0.0, t0 + offset - time.perf_counter()))
        async with slots:
            return await one(req, t0 + offset)

    return list(await asyncio.gather(*(arriving(r, a) for r, a in zip(requests, arrivals, strict=True))))


def run_llama_cpp(url: str, requests: list[BenchRequest], *, concurrency: int,
                  arrivals: list[float] | None = None) -> list[RequestTiming]:
    async def main() -> list[RequestTiming]:
        limits = httpx.Limits(max_connections=concurrency + 4)
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
            return await drive(concurrency, requests, lambda r, start: _llama_one(client, r, start), arrivals)

    return asyncio.run(main())
