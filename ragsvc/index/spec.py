"""Per-collection index settings, stored as JSON in the catalog and accepted by the API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

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

    def __post_init__(self) -> None:
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
        return cls(**data)
