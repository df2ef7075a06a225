"""Ids and plain records shared by every part of ragsvc (store, index, retrieval, api)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NewType

# NewType ids catch accidental misuse (passing a document id where a chunk id is expected).
ChunkId = NewType("ChunkId", int)
DocumentId = NewType("DocumentId", str)
CollectionName = NewType("CollectionName", str)

Metadata = dict[str, Any]

COLLECTION_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"
"""What a collection may be called: safe in a URL path and as a folder name on every file system."""
_COLLECTION_NAME = re.compile(COLLECTION_NAME_PATTERN)


def is_collection_name(name: object) -> bool:
    """Whether `name` is a valid collection name (matched whole: a trailing newline is not allowed)."""
    return isinstance(name, str) and _COLLECTION_NAME.fullmatch(name) is not None


MAX_DOCUMENT_ID_CHARS = 512
"""A document id is 1 to this many characters, whichever way it comes in (API, files, repositories)."""


@dataclass(frozen=True, slots=True)
class ChunkInput:
    """A chunk the caller cut itself (code definitions, say): a span of the document's text plus metadata."""

    text: str
    start_char: int
    end_char: int
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DocumentInput:
    """A document as a caller hands it in. `id` is derived from the content when absent.

    When `chunks` is None the store's chunker cuts the text; otherwise the given chunks are stored as they are
    (each chunk's metadata is merged over the document's).
    """

    text: str
    id: str | None = None
    metadata: Metadata = field(default_factory=dict)
    source: str | None = None
    chunks: list[ChunkInput] | None = None


@dataclass(frozen=True, slots=True)
class Chunk:
    """One embedded span of a document. `start_char`/`end_char` index into the document's text."""

    id: ChunkId
    document_id: DocumentId
    ordinal: int
    text: str
    start_char: int
    end_char: int
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Hit:
    """A search result: the chunk, the document it came from, and its score (higher is better)."""

    chunk_id: ChunkId
    document_id: DocumentId
    text: str
    score: float
    metadata: Metadata = field(default_factory=dict)


ServedPath = Literal["ann", "exact_prefix", "exact_subset", "untrained", "empty_filter", "lexical"]
"""How a search was answered (see ragsvc/index/collection_index.py for when each path is taken):
`ann` the sharded ANN structure (then, with Matryoshka dims, full-width rescoring of its shortlist);
`exact_prefix` an exact scan of a query-time prefix width, then rescoring; `exact_subset` an exact scan of
the few ids a filter allows; `untrained` an exact scan of the staging vectors kept until the index can train;
`empty_filter` nothing searched, because the filter matched no chunk; `lexical` the collection's BM25 index."""


@dataclass(frozen=True, slots=True)
class ServedBy:
    """Which structure answered a search, and how: the path, the index shape behind it, later stages.

    Fields that do not apply to the path are None. `str()` gives the one-line form the logs, the CLI and the
    REST field `served_by` show (for example "hnsw[2 shard(s), d=128]+rescore(L=200, int8)"); `to_dict()`
    gives every field for JSON. Build one with the per-path constructors, which take only what applies.
    """

    path: ServedPath
    backend: str | None = None
    """`ann`: the IndexSpec backend (hnsw, faiss_hnsw, ...)."""
    num_shards: int | None = None
    """`ann`: how many shards the query fanned out to."""
    dims: int | None = None
    """`ann`: the indexed (prefix) width d'; `exact_prefix`: the query-time width scanned."""
    shortlist: int | None = None
    """Candidates L rescored at full width (`ann` with rescoring, `exact_prefix`); None otherwise."""
    rescore_dtype: str | None = None
    """Precision of the full-width rescoring vectors; None when scores are not rescored."""
    tail_only: bool = False
    """The prefix part of each score is the ANN's own and only dims d'.. are rescored (rescore_tail_only)."""
    num_ids: int | None = None
    """`exact_subset`: ids the filter allows; `untrained`: vectors held in the staging buffer."""
    train_at: int | None = None
    """`untrained`: the number of vectors at which the index trains."""
    stages: tuple[str, ...] = ()
    """Stages after retrieval that re-ordered the hits, in order (e.g. "graph" for code search)."""
    replicas: int | None = None
    """`ann` served by Ray shard actors (placement ray): replicas per shard; None in process."""
    missing_shards: tuple[str, ...] = ()
    """Shards no replica answered, for a search that asked for a partial answer: their hits are missing."""

    @classmethod
    def ann(cls, *, backend: str, num_shards: int, dims: int, shortlist: int | None = None,
            rescore_dtype: str | None = None, tail_only: bool = False, replicas: int | None = None) -> ServedBy:
        return cls("ann", backend=backend, num_shards=num_shards, dims=dims, shortlist=shortlist,
                   rescore_dtype=rescore_dtype, tail_only=tail_only, replicas=replicas)

    @classmethod
    def exact_prefix(cls, *, dims: int, shortlist: int, rescore_dtype: str) -> ServedBy:
        return cls("exact_prefix", dims=dims, shortlist=shortlist, rescore_dtype=rescore_dtype)

    @classmethod
    def exact_subset(cls, *, num_ids: int, rescore_dtype: str | None = None, tail_only: bool = False) -> ServedBy:
        return cls("exact_subset", num_ids=num_ids, rescore_dtype=rescore_dtype, tail_only=tail_only)

    @classmethod
    def untrained(cls, *, num_ids: int, train_at: int) -> ServedBy:
        return cls("untrained", num_ids=num_ids, train_at=train_at)

    @classmethod
    def empty_filter(cls) -> ServedBy:
        return cls("empty_filter")

    @classmethod
    def lexical(cls) -> ServedBy:
        return cls("lexical")

    def with_stage(self, stage: str) -> ServedBy:
        """This answer followed by one more stage (rendered as a "+stage" suffix)."""
        return replace(self, stages=(*self.stages, stage))

    def __str__(self) -> str:
        return self._base() + "".join(f"+{stage}" for stage in self.stages)

    def _base(self) -> str:
        if self.path == "ann":
            where = "" if self.replicas is None else f" x{self.replicas} replica(s) on ray"
            served = f"{self.backend}[{self.num_shards} shard(s){where}, d={self.dims}]"
            if self.missing_shards:
                served += f"+partial(missing {', '.join(self.missing_shards)})"
            return served if self.rescore_dtype is None else f"{served}+{self._rescore()}"
        if self.path == "exact_prefix":
            return f"exact-prefix(d={self.dims})+{self._rescore()}"
        if self.path == "exact_subset":
            if self.rescore_dtype is None:
                scores = "full width"
            else:
                scores = f"{'prefix + ' if self.tail_only else ''}rescore {self.rescore_dtype}"
            return f"exact-subset({self.num_ids} ids, {scores})"
        if self.path == "untrained":
            return f"exact(untrained: {self.num_ids} < {self.train_at})"
        if self.path == "lexical":
            return "bm25"
        return "filter"

    def _rescore(self) -> str:
        return f"rescore(L={self.shortlist}, {self.rescore_dtype})"

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (stages as a list); `str(self)` is the one-line form."""
        return {"path": self.path, "backend": self.backend, "num_shards": self.num_shards, "dims": self.dims,
                "shortlist": self.shortlist, "rescore_dtype": self.rescore_dtype, "tail_only": self.tail_only,
                "num_ids": self.num_ids, "train_at": self.train_at, "stages": list(self.stages),
                "replicas": self.replicas, "missing_shards": list(self.missing_shards)}


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Hits best first, the wall time of each stage in milliseconds, and which index answered."""

    hits: list[Hit]
    timings_ms: dict[str, float]
    served_by: ServedBy
