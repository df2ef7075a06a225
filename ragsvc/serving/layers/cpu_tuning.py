"""The CPU the kernels run on, and the quantised kernels' blocking measured on it (not assumed).

Speed measured on one CPU does not carry to another: the cache sizes, the vector ISA and how the hypervisor
shares cores all move the best token tile and the point where expanding a weight once for a GEMM beats the
fused kernel. So at first use `quant_plan` times the candidates on this CPU, on a weight larger than the
last-level cache (decode streams weights from memory), and caches the choice as JSON beside the compiled
kernels, keyed by CPU model, ISA flags, cache sizes and the kernel library; later starts read it back.
`cpu_info` is also what benchmarks record, so figures from two machines are never compared blind.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ragsvc import native
from ragsvc.cpu_identity import describe_cpu
from ragsvc.serving.layers import cpu_q4_amx, cpu_q4_vnni, cpu_quant
from ragsvc.serving.layers.plan_cache import cached_plan
from ragsvc.serving.layers.quant import QuantWeight, padded

logger = logging.getLogger(__name__)

ISA_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni", "amx_bf16",
             "amx_tile", "avx_vnni")
"""The /proc/cpuinfo flags that change which kernel code runs (recorded; the rest of the list is noise)."""
PLAN_VERSION = 10
PREFILL_CANDIDATES = (16, 32, 64, 128, 256)
KERNEL_CANDIDATES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
"""Token counts at which the int8-activation and AMX kernels are timed against the path the plan takes otherwise."""
MAX_PROBE_ROWS = 65536
"""Most rows of the probe weight. A VM reports its host's whole last-level cache (260 MB on a 2-vCPU Xeon here),
of which it gets a share; sized by that, the probe took ~35 s at load and its 256-token product ran to gigabytes.
65536 rows of 1536 features are 50 MB of q4, still far past any per-core share."""


@dataclass(frozen=True)
class CpuInfo:
    model: str
    """Model name with family, model and stepping (`describe_cpu`): VMs of different chips share a name."""
    isa: tuple[str, ...]
    """The flags of ISA_FLAGS this CPU has."""
    l1d_kib: int | None
    l2_kib: int | None
    l3_kib: int | None
    """Per-instance cache sizes from /sys (None where not exposed)."""
    logical_cpus: int

    @property
    def last_level_cache_bytes(self) -> int:
        """L3, else L2, else 8 MiB: what a probe's weights must outgrow to be read from memory."""
        return (self.l3_kib or self.l2_kib or 8192) * 1024


@dataclass(frozen=True)
class QuantPlan:
    tile: int
    """Tokens per weight-row pass of the fused kernel (the best of cpu_quant.TILES at 16 tokens)."""
    prefill_tokens: int
    """Steps with more tokens than this expand the weight once and call the bf16 GEMM instead."""
    tile_ms: dict[str, float]
    prefill_ms: dict[str, list[float]]
    """What was measured: the tile times, and per token count [fused kernel, expand + GEMM]."""
    vnni_tokens: int = 0
    """q4 steps with at least this many tokens (and at most `vnni_until`) take the int8-activation kernel
    (cpu_q4_vnni); 0: never (no vector form of it, or it never beat the bf16 paths); 1 where the q4 kernel
    itself has no vector form."""
    vnni_until: int = 0
    """The most tokens the int8-activation kernel takes; 0: no bound. A window rather than a threshold: one
    count where it lost (noise, or a real loss at long steps) must not take it away from decode."""
    vnni_ms: dict[str, list[float]] = field(default_factory=dict)
    """Per token count [the bf16 path the plan picks otherwise, the int8-activation kernel]."""
    amx_tokens: int = 0
    """q4 steps with at least this many tokens take the AMX kernel (cpu_q4_amx), ahead of the int8-activation
    one; 0: never (no AMX, or it never beat the path the plan takes otherwise)."""
    amx_ms: dict[str, list[float]] = field(default_factory=dict)
    """Per token count [the path the plan picks otherwise, the AMX kernel]."""
    i8_tokens: int = 0
    i8_until: int = 0
    """int8-weight steps of i8_tokens..i8_until tokens take the int8-activation kernel's int8-weight form
    (cpu_q4_vnni, AVX-512 VNNI, at most 16 tokens a call); 0: never."""
    i8_ms: dict[str, list[float]] = field(default_factory=dict)
    """Per token count [the int8 fused kernel, the int8-weight form]."""

    def takes_vnni(self, tokens: int) -> bool:
        return 0 < self.vnni_tokens <= tokens and (self.vnni_until == 0 or tokens <= self.vnni_until)

    def takes_i8(self, tokens: int) -> bool:
        return 0 < self.i8_tokens <= tokens <= self.i8_until


def _cache_kib(level: int) -> int | None:
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    for index in sorted(root.glob("index*")):
        try:
            if int((index / "level").read_text()) != level or (index / "type").read_text().strip() == "Instruction":
                continue
            size = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        scale = {"K": 1, "M": 1024}.get(size[-1:])
        return int(size[:-1]) * scale if scale else int(size) // 1024
    return None


def cpu_info() -> CpuInfo:
    text = ""
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
    flags = set[str]()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return CpuInfo(model=describe_cpu(text), isa=tuple(f for f in ISA_FLAGS if f in flags), l1d_kib=_cache_kib(1),
                   l2_kib=_cache_kib(2), l3_kib=_cache_kib(3), logical_cpus=os.cpu_count() or 1)


def _random_q4(n: int, k: int) -> QuantWeight:
    """A q4 weight with random bytes and small scales: what the kernels' speed depends on, without quantising."""
    g = torch.Generator().manual_seed(0)
    kp = padded(k)
    data = torch.randint(0, 256, (n, kp // 2), dtype=torch.uint8, generator=g)
    scale = (torch.rand((n, kp // 32), generator=g) * 1e-2).to(torch.float16)
    return QuantWeight("q4", n, k, data, scale, -8 * scale)


def _random_int8(n: int, k: int) -> QuantWeight:
    g = torch.Generator().manual_seed(0)
    kp = padded(k)
    data = torch.randint(-127, 128, (n, kp), dtype=torch.int8, generator=g)
    return QuantWeight("int8", n, k, data, torch.rand(n, generator=g) * 1e-2, None)


def _median_ms(fn: object, reps: int = 3) -> float:
    assert callable(fn)
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def measure_plan(lib: ctypes.CDLL, info: CpuInfo, *, k: int = 1536) -> QuantPlan:
    """Time the tiles, the prefill cross-over, the int8-activation and AMX kernels on a q4 weight the size of
    the last-level cache, and the int8-weight form on an int8 one of the same shape (several seconds)."""
    l3_bytes = info.last_level_cache_bytes
    n = min(max(l3_bytes // (k // 2), 4096), MAX_PROBE_ROWS)
    qw = _random_q4(n, k)
    # Without its vector form the q4 kernel is a scalar loop that never runs (the int8-activation kernel takes
    # every q4 step, see _with_vnni) and would take minutes to time: the int8 kernel's blocking is measured.
    q4_vector = cpu_quant.q4_vectorised(lib)
    probe = qw if q4_vector else _random_int8(n, k)
    x16 = torch.randn(16, k, dtype=torch.bfloat16)
    tile_ms = {str(t): _median_ms(lambda t=t: cpu_quant.linear(lib, x16, probe, None, tile=t), reps=2)
               for t in cpu_quant.TILES}
    tile = int(min(tile_ms, key=lambda t: tile_ms[t]))
    prefill_ms: dict[str, list[float]] = {}
    prefill_tokens = PREFILL_CANDIDATES[-1]
    for m in PREFILL_CANDIDATES:  # the same out-of-cache weight: the GEMM side pays for writing its expansion
        x = torch.randn(m, k, dtype=torch.bfloat16)
        fused = _median_ms(lambda x=x: cpu_quant.linear(lib, x, probe, None, tile=tile), reps=2)
        gemm = _median_ms(lambda x=x: cpu_quant.expand_linear(lib, x, probe, None), reps=2)
        prefill_ms[str(m)] = [round(fused, 3), round(gemm, 3)]
        if gemm < fused:
            prefill_tokens = m // 2
            break
    plan = QuantPlan(tile=tile, prefill_tokens=prefill_tokens, tile_ms={t: round(v, 3) for t, v in tile_ms.items()},
                     prefill_ms=prefill_ms)
    return _with_i8(lib, _with_amx(lib, _with_vnni(lib, plan, qw, q4_vector=q4_vector), qw), n, k)


def _with_vnni(lib: ctypes.CDLL, plan: QuantPlan, qw: QuantWeight, *, q4_vector: bool = True) -> QuantPlan:
    """`plan` with the int8-activation kernel's window: the longest run of measured counts at which it beats
    the bf16 path `plan` would take (`_window`); none where it never does or lacks its vector path. Where the
    q4 kernel has no vector form (no AVX512_BF16: AVX2 CPUs) it takes every q4 step, single tokens too: a
    vector kernel against a scalar loop needs no timing. Its int8 activations are llama.cpp's Q4 x Q8 numerics,
    per token, so a single stream and a batch round alike; `ragsvc bench quant-quality` measures the cost."""
    vnni = cpu_q4_vnni.load()
    if vnni is None or not cpu_q4_vnni.vectorised(vnni):
        return plan
    if not q4_vector:
        return replace(plan, vnni_tokens=1)
    vnni_ms: dict[str, list[float]] = {}
    packed = cpu_q4_vnni.pack(vnni, qw)
    for m in KERNEL_CANDIDATES:
        x = torch.randn(m, qw.in_features, dtype=torch.bfloat16)
        bf16 = _bf16_path_ms(lib, plan, qw, x)
        int8 = _median_ms(lambda x=x: cpu_q4_vnni.linear(vnni, x, packed, None), reps=2)
        vnni_ms[str(m)] = [round(bf16, 3), round(int8, 3)]
    first, last = _window(vnni_ms)
    return replace(plan, vnni_tokens=first, vnni_until=last, vnni_ms=vnni_ms)


def _with_amx(lib: ctypes.CDLL, plan: QuantPlan, qw: QuantWeight) -> QuantPlan:
    """`plan` with the AMX kernel's threshold, measured as the int8-activation kernel's is, against the path
    `plan` takes otherwise at each token count; 0 where there is no AMX path or it never wins."""
    amx = cpu_q4_amx.load()
    if amx is None:
        return plan
    vnni = cpu_q4_vnni.load() if plan.vnni_tokens else None
    packed = cpu_q4_vnni.pack(vnni, qw) if vnni is not None else None
    amx_ms: dict[str, list[float]] = {}
    for m in KERNEL_CANDIDATES:
        x = torch.randn(m, qw.in_features, dtype=torch.bfloat16)
        if vnni is not None and packed is not None and plan.takes_vnni(m):
            other = _median_ms(lambda x=x: cpu_q4_vnni.linear(vnni, x, packed, None), reps=2)
        else:
            other = _bf16_path_ms(lib, plan, qw, x)
        tiles = _median_ms(lambda x=x: cpu_q4_amx.linear(amx, x, qw, None), reps=2)
        amx_ms[str(m)] = [round(other, 3), round(tiles, 3)]
    return replace(plan, amx_tokens=_wins_from(amx_ms), amx_ms=amx_ms)


def _with_i8(lib: ctypes.CDLL, plan: QuantPlan, n: int, k: int) -> QuantPlan:
    """`plan` with the int8-weight form's window, timed against cpu_quant's int8 kernel (what int8 linears run
    otherwise) from one token to the form's limit on an int8 probe weight of n x k; none where it is not built."""
    vnni = cpu_q4_vnni.load()
    limit = 0 if vnni is None else cpu_q4_vnni.int8_limit(vnni)
    if vnni is None or limit == 0:
        return plan
    probe = _random_int8(n, k)
    packed = cpu_q4_vnni.pack_int8(vnni, probe)
    counts = tuple(m for m in KERNEL_CANDIDATES if m <= limit)
    i8_ms: dict[str, list[float]] = {}
    for m in counts:
        x = torch.randn(m, k, dtype=torch.bfloat16)
        fused = _bf16_path_ms(lib, plan, probe, x)
        form = _median_ms(lambda x=x: cpu_q4_vnni.linear_int8(vnni, x, packed, None), reps=2)
        i8_ms[str(m)] = [round(fused, 3), round(form, 3)]
    first, last = _window(i8_ms, counts)
    return replace(plan, i8_tokens=first, i8_until=last or (limit if first else 0), i8_ms=i8_ms)


def _bf16_path_ms(lib: ctypes.CDLL, plan: QuantPlan, qw: QuantWeight, x: torch.Tensor) -> float:
    """The time of the bf16 path `plan` takes for x's token count: the fused kernel, or expand + GEMM."""
    if x.shape[0] > plan.prefill_tokens:
        return _median_ms(lambda: cpu_quant.expand_linear(lib, x, qw, None), reps=2)
    return _median_ms(lambda: cpu_quant.linear(lib, x, qw, None, tile=plan.tile), reps=2)


def _wins_from(ms: dict[str, list[float]]) -> int:
    """ms: token count -> [the other path, the candidate kernel]. The fewest tokens from which the candidate
    wins at every measured count: the longest run of wins that reaches the largest count; 0 if it loses there."""
    tokens = 0
    for m in reversed(KERNEL_CANDIDATES):
        if ms[str(m)][1] >= ms[str(m)][0]:
            break
        tokens = m
    return tokens


def _window(ms: dict[str, list[float]], candidates: tuple[int, ...] = KERNEL_CANDIDATES) -> tuple[int, int]:
    """ms as for `_wins_from` -> (first, last): the longest run of consecutive counts of `candidates` where the
    candidate kernel wins (of equal runs, the one with fewer tokens: decode steps are the most frequent); last is
    0 when the run reaches the largest count (no bound). (0, 0) when it never wins."""
    best: tuple[int, int] = (0, 0)
    start = None
    counts = [*candidates, None]
    for i, m in enumerate(counts):
        wins = m is not None and ms[str(m)][1] < ms[str(m)][0]
        if wins and start is None:
            start = i
        elif not wins and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    if best == (0, 0):
        return 0, 0
    first, end = best
    return candidates[first], 0 if end == len(candidates) else candidates[end - 1]


def quant_plan(lib: ctypes.CDLL) -> QuantPlan:
    """The cached plan for this CPU, measuring it first when there is none (a few seconds, once per CPU)."""
    info = cpu_info()
    sources = [native.read_source(__package__, name) for name in ("cpu_quant.cpp", "cpu_q4_vnni.cpp", "cpu_q4_amx.cpp")]
    key = [PLAN_VERSION, asdict(info), torch.__version__, sources]
    return cached_plan("quant-plan", key, QuantPlan, lambda: measure_plan(lib, info))
