"""Wire models of the collections API: what clients send (…Create, …Request) and get back (…Public)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_type_hints

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from ragsvc.api.answer_schemas import HydeBody
from ragsvc.api.request_body import RequestBody
from ragsvc.index.spec import IndexSpec
from ragsvc.types import COLLECTION_NAME_PATTERN, MAX_DOCUMENT_ID_CHARS

COLLECTION_NAME = f"^{COLLECTION_NAME_PATTERN}$"
"""The store's rule (ragsvc/types.py), here so the OpenAPI document shows it. pydantic matches patterns with
Rust's regex, where `$` is the end of the text (Python's `re` would also admit a final newline)."""
CollectionName = Annotated[str, StringConstraints(pattern=COLLECTION_NAME)]


def check_document_id(value: str) -> str:
    """Ids travel in URL paths (`/documents/{id}`, which takes `/` too): no control characters, and no `.` or `..`
    segment, which HTTP clients fold away before sending."""
    if not value or len(value) > MAX_DOCUMENT_ID_CHARS:
        raise ValueError(f"a document id is 1-{MAX_DOCUMENT_ID_CHARS} characters")
    if not value.isprintable():
        raise ValueError("a document id holds no control characters (newlines, tabs, ...)")
    if any(part in (".", "..") for part in value.split("/")):
        raise ValueError("a document id has no '.' or '..' path segment (URLs cannot carry it)")
    return value


_INDEX_SETTINGS = {name: TypeAdapter(hint) for name, hint in get_type_hints(IndexSpec).items() if name != "placement"}


class CollectionCreate(BaseModel):
    # Not strict as a whole: pydantic's strict mode takes a dataclass only as an instance, never a JSON object;
    # `_typed_settings` holds the index settings to their JSON types instead.
    model_config = ConfigDict(extra="forbid")

    name: CollectionName = Field(..., description="1-64 letters, digits, _ . - (starting with a letter or digit)")
    # IndexSpec is validated by pydantic as a dataclass: its Literal fields, __post_init__ checks and the
    # refusal of unknown keys all come back as 400s naming the setting.
    index: IndexSpec = Field(default_factory=IndexSpec)
    chunk_tokens: StrictInt = Field(200, ge=16, le=8192)
    chunk_overlap: StrictInt = Field(32, ge=0, le=8192)

    @field_validator("index", mode="before")
    @classmethod
    def _typed_settings(cls, value: Any) -> Any:
        """`"hnsw_m": "16"` or `"rotate": 1` is refused as in every other body (the dataclass alone reads them
        laxly); values of the right type but out of range are left to the spec's own checks and messages."""
        for key, item in value.items() if isinstance(value, dict) else ():
            if (adapter := _INDEX_SETTINGS.get(key)) is None:
                continue
            try:
                adapter.validate_python(item, strict=True)
            except ValidationError as err:
                wrong = [e for e in err.errors() if e["type"].endswith("_type")]
                if wrong:
                    context = {"key": key, "message": wrong[0]["msg"], "given": repr(item)[:100]}
                    raise PydanticCustomError("index_setting_type", "{key}: {message} (got {given})", context) from None
        return value


class CollectionPublic(BaseModel):
    name: str
    embedder_id: str
    dim: int
    index: dict[str, Any]
    chunk_tokens: int
    chunk_overlap: int
    num_documents: int
    num_chunks: int
    index_bytes: int | None = Field(None, description="bytes the collection's vector index holds in memory to "
                                    "answer queries (ANN structure, rescoring vectors, staging), as the index "
                                    "measures itself; null if it was deleted meanwhile")


class DocumentIn(RequestBody):
    id: str | None = Field(None, min_length=1, max_length=MAX_DOCUMENT_ID_CHARS,
                           description="derived from the text's hash when absent; printable, no . or .. segment")
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    source: str | None = Field(None, max_length=4096)

    @field_validator("id")
    @classmethod
    def _path_safe(cls, value: str | None) -> str | None:
        return None if value is None else check_document_id(value)

    @field_validator("text")
    @classmethod
    def _has_text(cls, value: str) -> str:
        if not value.strip():  # refused here, so the 400 names the field (body.documents.N.text)
            raise PydanticCustomError("empty_text", "empty or only whitespace; every document needs some text")
        return value


class DocumentsCreate(RequestBody):
    documents: list[DocumentIn]


class DocumentsCreated(BaseModel):
    ids: list[str]
    collection: str
    took_ms: float


class SearchRequest(RequestBody):
    query: str | None = Field(None, description="text to search for; send exactly one of query and vector (lexical, "
                              "hybrid, HyDE and reranked searches need query)")
    vector: list[float] | None = Field(None, description="a query vector of the collection's width, instead of query")
    k: int = 10
    filter: dict[str, Any] | None = None
    dims: int | None = Field(None, ge=1, le=65536)
    shortlist: int | None = Field(None, ge=1, le=100_000)
    ef_search: int | None = Field(None, ge=1, le=100_000, description="HNSW search breadth for this query")
    deadline_ms: float | None = Field(None, description="placement ray: time the shards get to answer, in (0, "
                                      "600000] ms \[default: 2000]; in process it changes nothing")
    allow_partial: bool = Field(False, description="placement ray: when a shard has no replica that answers, return "
                                "the other shards' hits with partial true instead of a 503")
    mode: Literal["dense", "lexical", "hybrid"] = Field("dense", description="dense vectors, BM25, or both fused")
    hyde: HydeBody | bool | None = Field(None, description="true for the defaults, or the HyDE options")
    rerank: Literal["embedder", "llm", "cross-encoder"] | None = None
    rerank_candidates: int = Field(30, ge=1, le=200, description="fused hits the reranker rescores")
    candidates: int = Field(100, ge=1, le=1000, description="hits per retriever before fusion / reranking")
    fusion: Literal["rrf", "convex"] = "rrf"
    alpha: float = Field(0.5, ge=0, le=1, description="dense weight of the convex combination")

    @property
    def uses_pipeline(self) -> bool:
        return self.mode != "dense" or self.hyde not in (None, False) or self.rerank is not None


class HitPublic(BaseModel):
    chunk_id: int
    document_id: str
    text: str
    score: float
    metadata: dict[str, Any]


class ServedByPublic(BaseModel):
    """ragsvc.types.ServedBy field by field: which structure answered, for clients that branch on it."""

    path: str = Field(..., description="ann, exact_prefix, exact_subset, untrained or empty_filter")
    backend: str | None = None
    num_shards: int | None = None
    dims: int | None = Field(None, description="indexed prefix width d' (ann) or the query-time dims scanned")
    shortlist: int | None = Field(None, description="candidates rescored at full width")
    rescore_dtype: str | None = None
    tail_only: bool = False
    num_ids: int | None = Field(None, description="ids a filter allowed (exact_subset), vectors staged (untrained)")
    train_at: int | None = None
    stages: list[str] = Field(default_factory=list)
    replicas: int | None = Field(None, description="replicas per shard when Ray actors answered (placement ray)")
    missing_shards: list[str] = Field(default_factory=list, description="shards no replica answered (partial)")


class SearchResponse(BaseModel):
    hits: list[HitPublic]
    timings_ms: dict[str, float]
    served_by: str = Field(..., description="one line, e.g. \"hnsw[1 shard(s), d=384]\"; stable for logs")
    served_by_detail: ServedByPublic
    partial: bool = Field(False, description="some shard's hits are missing (see served_by_detail.missing_shards); "
                                             "only when the request set allow_partial")
    stages: list[str] = Field(default_factory=list, description="pipeline stages that ran (hyde, dense, lexical, "
                                                                 "fuse, rerank:NAME); empty for plain dense search")
