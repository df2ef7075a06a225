"""Wire models of the collections API: what clients send (…Create, …Request) and get back (…Public)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ragsvc.index.spec import IndexSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IndexSettingsIn(_Strict):
    backend: str = "hnsw"
    metric: str = "cosine"
    num_shards: int = 1
    dims: int | None = None
    shortlist: int = 200
    rotate: bool = True
    hnsw_m: int = 16
    ef_construction: int = 200
    ef_search: int = 64
    ivf_nlist: int | None = None
    ivf_nprobe: int = 16
    pq_m: int = 16
    rescore_dtype: str = "int8"
    use_gpu: bool = False


class CollectionCreate(_Strict):
    name: str = Field(..., description="1-64 letters, digits, _ . -")
    index: IndexSettingsIn = Field(default_factory=IndexSettingsIn)
    chunk_tokens: int = Field(200, ge=16, le=8192)
    chunk_overlap: int = Field(32, ge=0)


class CollectionPublic(BaseModel):
    name: str
    embedder_id: str
    dim: int
    index: dict[str, Any]
    chunk_tokens: int
    chunk_overlap: int
    num_documents: int
    num_chunks: int


class DocumentIn(_Strict):
    id: str | None = Field(None, description="derived from the text's hash when absent")
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None


class DocumentsCreate(_Strict):
    documents: list[DocumentIn]


class DocumentsCreated(BaseModel):
    ids: list[str]
    collection: str
    took_ms: float


class SearchRequest(_Strict):
    query: str | None = None
    vector: list[float] | None = None
    k: int = 10
    filter: dict[str, Any] | None = None
    dims: int | None = Field(None, ge=1)
    shortlist: int | None = Field(None, ge=1, le=100_000)


class HitPublic(BaseModel):
    chunk_id: int
    document_id: str
    text: str
    score: float
    metadata: dict[str, Any]


class SearchResponse(BaseModel):
    hits: list[HitPublic]
    timings_ms: dict[str, float]
    served_by: str


def index_spec_from(wire: IndexSettingsIn) -> IndexSpec:
    """IndexSpec validates values and raises ValueError with the fix; the route maps that to 400."""
    return IndexSpec.from_dict(wire.model_dump())
