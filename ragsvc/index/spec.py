"""Per-collection index settings, stored as JSON in the catalog and accepted by the API, and their bounds.

Two checks, at two depths. `IndexSpec.__post_init__` refuses what can never work (an unknown backend, a
non-positive count): it runs wherever a spec is built, including when a stored one is read back. `check_spec`
refuses what would work but cost too much: every parameter that sizes memory, disk or work per vector or per
query has an upper bound in `IndexLimits`, and `pq_m` must divide the indexed width. It runs when a collection
is created, where the vectors' width is known, so an oversized request (an HNSW `M` of a billion: gigabytes of
links for one vector) is answered with a 400 naming the parameter and its range before anything is written.
Collections created before a limit was lowered keep loading; only new ones are held to it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from ragsvc.config import IndexLimitSettings
from ragsvc.errors import InvalidInput
from ragsvc.index.placement import Placement

Backend = Literal["hnsw", "faiss_flat", "faiss_ivf", "faiss_ivfpq", "faiss_hnsw", "exact"]
Metric = Literal["cosine", "ip", "l2"]
BACKENDS: tuple[str, ...] = ("hnsw", "faiss_flat", "faiss_ivf", "faiss_ivfpq", "faiss_hnsw", "exact")
METRICS: tuple[str, ...] = ("cosine", "ip", "l2")
PREFIX_QUANTS: tuple[str, ...] = ("none", "sq8", "sq6", "sq4", "fp16")
RESCORE_DTYPES: tuple[str, ...] = ("float32", "float16", "int8", "int4")


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """How a collection's vectors are indexed. Derived data: changing it means a rebuild from the store."""

    backend: Backend = "hnsw"
    """ANN library and structure each shard uses; `exact` is the numpy oracle."""
    metric: Metric = "cosine"
    """cosine normalises vectors and searches by inner product."""
    num_shards: int = 1
    """Shards are chosen by hash of chunk id and searched in parallel, then merged exactly."""
    dims: int | None = None
    """Matryoshka prefix width d' that the ANN structure indexes; None means full width, no rescoring."""
    shortlist: int = 200
    """Candidates L fetched on the prefix and rescored at full width (only used when `dims` is set)."""
    rotate: bool = True
    """Fit a PCA rotation at build time so leading dimensions carry the most variance (for non-MRL embedders)."""
    hnsw_m: int = 16
    ef_construction: int = 200
    ef_search: int = 64
    ivf_nlist: int | None = None
    """IVF lists; None picks about 4·sqrt(n) at train time."""
    ivf_nprobe: int = 16
    pq_m: int = 16
    """Sub-quantisers for IVF-PQ; must divide the indexed width."""
    rescore_dtype: Literal["float32", "float16", "int8", "int4"] = "int8"
    """Precision of the full-width vectors kept for rescoring the shortlist (int8/int4: one scale a vector)."""
    rescore_tail_only: bool = False
    """Keep only dimensions d'..dim in the rescoring vectors and take each candidate's prefix part of the score
    from the ANN index (exact for hnsw and faiss float32, 8-bit for sq8): saves d' bytes a vector. Query-time
    `dims` overrides are then refused (the prefix is not kept for exact scans)."""
    prefix_quant: Literal["none", "sq8", "sq6", "sq4", "fp16"] = "none"
    """FAISS backends only: scalar-quantise the vectors the ANN structure stores (the d' prefix when `dims` is
    set), e.g. `sq8` with faiss_hnsw is IndexHNSWSQ: a quarter of the float32 memory."""
    use_gpu: bool = False
    """FAISS backends only: move shards to the GPU when CUDA and faiss-gpu are present; CPU otherwise."""
    placement: Placement = field(default_factory=Placement)
    """Where the `num_shards` shards run: in the API process (default) or as replicated Ray actors."""

    def __post_init__(self) -> None:
        if isinstance(self.placement, dict):  # nested JSON (a stored spec, a request) becomes the dataclass
            object.__setattr__(self, "placement", Placement.from_dict(self.placement))
        if self.backend not in BACKENDS:
            raise ValueError(f"index backend {self.backend!r} is unknown; use one of {', '.join(BACKENDS)}")
        if self.metric not in METRICS:
            raise ValueError(f"metric {self.metric!r} is unknown; use one of {', '.join(METRICS)}")
        if not 1 <= self.num_shards <= 256:
            raise ValueError(f"num_shards must be between 1 and 256, got {self.num_shards}")
        if self.dims is not None and self.dims < 1:
            raise ValueError(f"dims must be a positive prefix width or null, got {self.dims}")
        if self.shortlist < 1:
            raise ValueError(f"shortlist must be at least 1, got {self.shortlist}")
        if self.prefix_quant not in PREFIX_QUANTS:
            raise ValueError(f"prefix_quant {self.prefix_quant!r} is unknown; use one of {', '.join(PREFIX_QUANTS)}")
        if self.prefix_quant != "none" and self.backend not in ("faiss_flat", "faiss_ivf", "faiss_hnsw"):
            raise ValueError(f"prefix_quant applies to faiss_flat, faiss_ivf and faiss_hnsw, not {self.backend}")
        if self.rescore_tail_only and self.dims is None:
            raise ValueError("rescore_tail_only needs dims (the prefix width the ANN index scores)")
        if self.rescore_dtype not in RESCORE_DTYPES:
            raise ValueError(f"rescore_dtype {self.rescore_dtype!r} is unknown; use one of {', '.join(RESCORE_DTYPES)}")
        for name in ("hnsw_m", "ef_construction", "ef_search", "ivf_nprobe", "pq_m"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown index setting(s) {unknown}; known: {sorted(known)}")
        if "placement" in data:  # stored specs written before placement existed have none: in_process
            data = {**data, "placement": Placement.from_dict(data["placement"])}
        return cls(**data)


@dataclass(frozen=True, slots=True)
class IndexLimits:
    """Upper bounds on index parameters (settings section `index_limits`, env RAGSVC_INDEX_LIMITS__*).

    The defaults are a few times what any measured configuration of ours needed, and low enough that no
    single collection's parameters can multiply memory per vector by more than that: hnswlib keeps 2·M links
    of 4 bytes per vector at level 0, so M=128 is 1 KB a vector next to MiniLM's 1.5 KB of floats.
    """

    max_num_shards: int = 64
    """Each shard is a separate graph searched per query; more shards than cores only adds merge work."""
    max_hnsw_m: int = 128
    """Graph degree; memory per vector grows as 8·M bytes (hnswlib's level 0 keeps 2·M links)."""
    max_ef_construction: int = 2048
    """Build-time search breadth: insert cost grows linearly with it."""
    max_ef_search: int = 4096
    """Query-time search breadth, for the spec and for per-query overrides."""
    max_ivf_nlist: int = 65_536
    """IVF lists; k-means over them needs at least that many training vectors."""
    max_ivf_nprobe: int = 65_536
    """Lists scanned per query (also capped by ivf_nlist when that is set)."""
    max_pq_m: int = 256
    """Product-quantiser sub-vectors (8 bits each); must also divide the indexed width."""
    max_shortlist: int = 10_000
    """Candidates rescored at full width per query, for the spec and for per-query overrides."""

    @classmethod
    def from_settings(cls, section: IndexLimitSettings) -> IndexLimits:
        return cls(**section.model_dump())


def check_spec(spec: IndexSpec, *, dim: int, limits: IndexLimits) -> None:
    """Refuse a spec whose parameters exceed `limits` or do not fit vectors of width `dim` (InvalidInput)."""
    if spec.dims is not None:
        _check_range("dims", spec.dims, 1, dim, why="the embedder's width")
    width = spec.dims or dim
    _check_range("num_shards", spec.num_shards, 1, limits.max_num_shards, setting="max_num_shards")
    _check_range("hnsw_m", spec.hnsw_m, 2, limits.max_hnsw_m, setting="max_hnsw_m")
    _check_range("ef_construction", spec.ef_construction, 1, limits.max_ef_construction,
                 setting="max_ef_construction")
    _check_range("ef_search", spec.ef_search, 1, limits.max_ef_search, setting="max_ef_search")
    _check_range("shortlist", spec.shortlist, 1, limits.max_shortlist, setting="max_shortlist")
    if spec.ivf_nlist is not None:
        _check_range("ivf_nlist", spec.ivf_nlist, 1, limits.max_ivf_nlist, setting="max_ivf_nlist")
    nprobe_max = min(limits.max_ivf_nprobe, spec.ivf_nlist or limits.max_ivf_nprobe)
    _check_range("ivf_nprobe", spec.ivf_nprobe, 1, nprobe_max,
                 why="RAGSVC_INDEX_LIMITS__MAX_IVF_NPROBE, and at most ivf_nlist")
    if spec.backend == "faiss_ivfpq":
        pq_max = min(limits.max_pq_m, width)
        _check_range("pq_m", spec.pq_m, 1, pq_max, why="RAGSVC_INDEX_LIMITS__MAX_PQ_M, and at most the indexed width")
        if width % spec.pq_m:
            divisors = [d for d in range(1, pq_max + 1) if width % d == 0]
            raise InvalidInput(f"index pq_m {spec.pq_m} must divide the indexed width {width}; use one of "
                               f"{divisors}", detail={"param": "index.pq_m"})

def check_override(name: str, value: int | None, maximum: int) -> None:
    """Refuse a per-query override (`ef_search`, `shortlist`) outside 1..maximum (InvalidInput)."""
    if value is not None:
        _check_range(name, value, 1, maximum, setting=f"max_{name}")


def _check_range(name: str, value: int, low: int, high: int, *, setting: str | None = None,
                 why: str | None = None) -> None:
    if not low <= value <= high:
        source = why if why is not None else f"RAGSVC_INDEX_LIMITS__{(setting or '').upper()}"
        raise InvalidInput(f"index {name} must be between {low} and {high} ({source}), got {value}",
                           detail={"param": f"index.{name}"})
