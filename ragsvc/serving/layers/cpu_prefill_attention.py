"""Causal prefill attention for the CPU in bf16, in C++ built with the system compiler and called via ctypes.

Why a kernel: on a CPU with AVX512-BF16 but no AMX, torch's flash SDPA runs a bf16 causal prefill far below
the GEMM throughput oneDNN reaches on the same shapes; in `ragsvc bench serving` at 32 concurrent on an AMD
EPYC, prefill attention was 7.4 s of a 43.5 s run, at 40-55 GFLOP/s against ~300 for the GEMMs. This kernel
packs K and V once into the pair layout of `vdpbf16ps`, computes 4 query rows x 64 keys of scores in
registers, skips the keys the causal mask hides, and never materialises a mask. The C++ is
cpu_prefill_attention.cpp beside this module. `prefill_attention` in
attention.py (SDPA) stays the reference it is tested against and the path for float32, other head sizes and
CPUs without AVX512-BF16.

Numerics: scores are exact products of bf16 pairs summed in fp32, softmax in fp32, P rounded to bf16 for the
P.V products (as torch's flash kernel does in bf16), fp32 accumulation, one rounding of the output.

The kernel has a second form for CPUs whose bf16 dot product is slow: the same packed K and V widened to fp32 in
registers and multiplied with fp32 FMAs, P kept in fp32 (closer to the fp32 reference, not further). `best_form`
times the forms once per CPU and head shape, on a chunk of `PROBE_TOKENS` tokens, and caches the answer like the GEMM
plans. On a Xeon without AMX the FMAs won (1.35-1.5x); on Zen 4, whose `vdpbf16ps` is twice its FMA rate,
`vdpbf16ps` is expected to.

On a Xeon with AMX, torch's flash SDPA runs its products on the tiles and beats both of those forms: 2.0 against
2.7 ms (the FMA form) for a fresh 512-token prompt of SmolLM2's heads on 2 cores, 1.0 against 1.3 ms for 128 tokens
behind 512 cached ones. So there is a third form, on AMX tiles, built where the compiler and CPU have AMX and run
where Linux grants the process tile data: a work item is 16 tokens of one query head, whose scores and P.V are
tile products of the same packed K and V (see the .cpp). `best_form` times every form this build and CPU can run
and keeps the fastest; `sdpa_faster` times SDPA against it, once per CPU and head shape, and where SDPA wins on
both probes the runner leaves prefill to it. In a profiled serving level there (32 concurrent,
two alternating pairs) the whole level took 14.5-15.1 s against 15.7-16.3 s with the kernel, but the prefill
steps' attention did not shrink (2.8-2.9 against 2.6 s, SDPA building a mask per segment): the time came off
the decode steps, for a reason not established (the kernel's OpenMP team waking beside oneDNN's is a guess).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from ragsvc import native
from ragsvc.serving.layers.cpu_build import load_library
from ragsvc.serving.layers.cpu_tuning import cpu_info
from ragsvc.serving.layers.plan_cache import cached_plan

logger = logging.getLogger(__name__)

_ARGTYPES = [ctypes.c_void_p, ctypes.c_int64] * 4 + [ctypes.c_int64] * 5 + [ctypes.c_float, ctypes.c_int64]
DPBF16, FMA, AMX = 0, 1, 2
FORMS = ("dpbf16", "fma", "amx")
"""The kernel's forms, by the number the C entry takes: vdpbf16ps, fp32 FMAs, AMX tiles."""
PROBE_TOKENS = 512
"""Tokens of the chunk `best_form` times the forms on (a fresh prompt: every row sees a different share of
the keys, as in serving)."""


@functools.cache
def load() -> ctypes.CDLL | None:
    """The compiled kernel (built on first use, then cached on disk); None when it cannot be built."""
    lib = load_library("prefill_attention", "cpu_prefill_attention.cpp", {"prefill_attention_bf16": list(_ARGTYPES)})
    if lib is not None:
        lib.prefill_supported.argtypes, lib.prefill_supported.restype = [ctypes.c_int64], ctypes.c_int64
        lib.prefill_amx_available.argtypes, lib.prefill_amx_available.restype = [], ctypes.c_int64
    return lib


@functools.cache
def amx_available(lib: ctypes.CDLL) -> bool:
    """Whether the AMX form can run: built in (compiler and CPU have AMX) and tile data granted to this process."""
    return bool(lib.prefill_amx_available())


def forms(lib: ctypes.CDLL) -> tuple[int, ...]:
    """The forms this build can run on this CPU."""
    return (DPBF16, FMA, AMX) if amx_available(lib) else (DPBF16, FMA)


def supports(lib: ctypes.CDLL, *, dtype: torch.dtype, num_heads: int, num_kv_heads: int, head_dim: int) -> bool:
    """Whether the kernel handles this shape on this CPU (else use SDPA)."""
    return dtype == torch.bfloat16 and num_heads % num_kv_heads == 0 and bool(lib.prefill_supported(head_dim))


def _token_rows(x: torch.Tensor) -> torch.Tensor:
    """x: (tokens, heads, head_dim) with heads packed (any token stride) -> itself, or a copy if not packed."""
    d = x.shape[2]
    return x if x.stride(2) == 1 and x.stride(1) == d else x.contiguous()


def prefill_attention(
    lib: ctypes.CDLL, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, *, scale: float,
    form: int = DPBF16,
) -> None:
    """Causal attention of the chunk's queries, which sit at the last positions of the context, into `out`.

    q: (chunk, heads, head_dim); k, v: (context, kv_heads, head_dim), context >= chunk; out: (chunk, heads,
    head_dim), written in place. All bf16; token strides are free, heads must be packed (copied if not).
    `form`: DPBF16, FMA or AMX (see the module docstring); ValueError for one this build cannot run.
    """
    n_q, h, d = q.shape
    n_k, kvh = k.shape[0], k.shape[1]
    if n_k < n_q or v.shape[0] != n_k:
        raise ValueError(f"context of {n_k} keys / {v.shape[0]} values cannot hold a chunk of {n_q} queries")
    if out.stride(2) != 1 or out.stride(1) != d:
        raise ValueError("out must have packed heads: (chunk, heads, head_dim) with unit stride in head_dim")
    if form not in forms(lib):
        raise ValueError(f"form {form} cannot run here; this build and CPU run {[FORMS[f] for f in forms(lib)]}")
    q, k, v = _token_rows(q), _token_rows(k), _token_rows(v)
    lib.prefill_attention_bf16(
        q.data_ptr(), q.stride(0), k.data_ptr(), k.stride(0), v.data_ptr(), v.stride(0),
        out.data_ptr(), out.stride(0), n_q, n_k, h, kvh, d, scale, form,
    )


def _time_forms(lib: ctypes.CDLL, *, num_heads: int, num_kv_heads: int, head_dim: int) -> list[float]:
    """Median milliseconds of each form `forms` gives, in that order, on one PROBE_TOKENS-token prompt."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(PROBE_TOKENS, num_heads, head_dim, generator=g).to(torch.bfloat16)
    k, v = (torch.randn(PROBE_TOKENS, num_kv_heads, head_dim, generator=g).to(torch.bfloat16) for _ in range(2))
    out = torch.empty_like(q)
    return [_median_ms(functools.partial(prefill_attention, lib, q, k, v, out, scale=head_dim**-0.5, form=form))
            for form in forms(lib)]


def _median_ms(run: Callable[[], object]) -> float:
    """Median milliseconds of 5 calls of `run` after one untimed, rounded to microseconds."""
    run()
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        run()
        runs.append((time.perf_counter() - start) * 1e3)
    return round(statistics.median(runs), 3)


@dataclass(frozen=True)
class PrefillForm:
    form: int
    """The fastest form (DPBF16, FMA or AMX)."""
    ms: list[float]
    """What was measured, per form of `forms` in order, on a PROBE_TOKENS prompt."""


def best_form(lib: ctypes.CDLL, *, num_heads: int, num_kv_heads: int, head_dim: int) -> int:
    """The kernel's fastest form on this CPU for this head shape: read from the cache, or measured once (well
    under a second) and cached."""
    shape = [num_heads, num_kv_heads, head_dim, torch.get_num_threads()]
    source = native.read_source(__package__, "cpu_prefill_attention.cpp")
    key = [asdict(cpu_info()), source, shape, PROBE_TOKENS, list(forms(lib))]

    def measure() -> PrefillForm:
        ms = _time_forms(lib, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim)
        return PrefillForm(form=forms(lib)[ms.index(min(ms))], ms=ms)

    return cached_plan("prefill-form", key, PrefillForm, measure).form


CONTEXT_PROBE = (128, 640)
"""(chunk, context) of the second prompt `sdpa_faster` times: a chunk behind context already cached, which SDPA
takes with an explicit mask (`attention.prefill_attention`) rather than its causal flag."""


def _time_sdpa(lib: ctypes.CDLL, *, num_heads: int, num_kv_heads: int, head_dim: int,
               form: int) -> list[list[float]]:
    """Median milliseconds of [kernel in its `form`, SDPA] on a fresh PROBE_TOKENS-token prompt, then on a
    CONTEXT_PROBE chunk behind its context; SDPA as `attention.prefill_attention` runs it."""
    import torch.nn.functional as F  # noqa: N812 - torch's own convention

    g = torch.Generator().manual_seed(0)
    scale = head_dim**-0.5
    rows = []
    for chunk, context in ((PROBE_TOKENS, PROBE_TOKENS), CONTEXT_PROBE):
        q = torch.randn(chunk, num_heads, head_dim, generator=g).to(torch.bfloat16)
        k, v = (torch.randn(context, num_kv_heads, head_dim, generator=g).to(torch.bfloat16) for _ in range(2))
        qt, kt, vt = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))
        if chunk == context:
            sdpa = functools.partial(F.scaled_dot_product_attention, qt, kt, vt, is_causal=True, scale=scale,
                                     enable_gqa=True)
        else:
            group = num_heads // num_kv_heads
            mask = torch.arange(context)[None, :] <= torch.arange(context - chunk, context)[:, None]
            folded = qt.reshape(1, num_kv_heads, group * chunk, head_dim)  # as attention.prefill_attention folds
            sdpa = functools.partial(F.scaled_dot_product_attention, folded, kt, vt, attn_mask=mask.repeat(group, 1),
                                     scale=scale)
        kernel = functools.partial(prefill_attention, lib, q, k, v, torch.empty_like(q), scale=scale, form=form)
        with torch.inference_mode():
            rows.append([_median_ms(kernel), _median_ms(sdpa)])
    return rows


@dataclass(frozen=True)
class PrefillSdpa:
    sdpa: bool
    """Whether torch's SDPA beat the kernel on both probes."""
    ms: list[list[float]]
    """What was measured: [[kernel, SDPA] fresh, [kernel, SDPA] behind context]."""


def sdpa_faster(lib: ctypes.CDLL, *, num_heads: int, num_kv_heads: int, head_dim: int, form: int) -> bool:
    """Whether torch's SDPA beat the kernel (in its `form`) on a fresh prompt and on a chunk behind context,
    on this CPU for this head shape: read from the cache, or measured once (well under a second) and cached."""
    shape = [num_heads, num_kv_heads, head_dim, torch.get_num_threads(), form]
    source = native.read_source(__package__, "cpu_prefill_attention.cpp")
    key = [asdict(cpu_info()), source, shape, PROBE_TOKENS, list(CONTEXT_PROBE), str(torch.__version__)]

    def measure() -> PrefillSdpa:
        ms = _time_sdpa(lib, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim, form=form)
        return PrefillSdpa(sdpa=all(sdpa < kernel for kernel, sdpa in ms), ms=ms)

    return cached_plan("prefill-sdpa", key, PrefillSdpa, measure).sdpa
