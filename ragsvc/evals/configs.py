"""What a config kind is: how a suite's [[configs]] table parses, and how the runner turns it into a retriever.

Kinds are looked up by name in `ragsvc.evals.kinds` (`index`: index structures; `pipeline`: the retrieval
pipeline's stages), so a new kind is a module and a registration; the suite parser, runner and reports stay
as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ragsvc.types import DocumentInput

if TYPE_CHECKING:
    from ragsvc.evals.sections import RetrievalSection
    from ragsvc.llm.generator import Generator
    from ragsvc.retrieval.vector_store import VectorStore

Where = Callable[..., str]
"""where("backend") -> "suite.toml:12": the file and line of a key in this config's table, for errors."""


class EvalConfig(Protocol):
    """A parsed, frozen config. `to_dict` is what results and checkpoints record."""

    # read-only properties, so frozen dataclasses satisfy the protocol
    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class RunContext:
    """Everything a kind may use to build its retriever for one suite run."""

    store: VectorStore
    documents: Sequence[DocumentInput]
    """The corpus as the store ingests it (one chunk per document, or chunked by the store)."""
    retrieval: RetrievalSection
    collection_prefix: str
    corpus_collection: str = ""
    """The warm-up collection holding the whole corpus (exact index + BM25), kept between runs."""
    llm: Generator | None = None
    """The run's language model, for configs that generate (HyDE) or judge (LLM rerank); None if not given."""
    models_root: Path | None = None
    """Where model folders named in a suite live (`--models-root` / RAGSVC_EVAL__MODELS_ROOT)."""
    shared: dict[tuple[str, ...], Any] = field(default_factory=dict)
    """Parts that configs of one run share (a reranking embedder loaded once), by a key the kind chooses."""


class Retriever(Protocol):
    """A built config: answers one query with document scores (document id -> score, any order)."""

    build_s: float
    index_bytes: int

    @property
    def served_by(self) -> Mapping[str, int]:
        """How many queries each structure answered, keyed by str(SearchResult.served_by): what was measured."""
        ...

    def search(self, query_id: str, text: str, vector: np.ndarray) -> dict[str, float]:
        """`vector` is the query embedding (dim,), computed once per query for every config."""
        ...

    def close(self) -> None:
        """Drop what `prepare` built (collections are rebuilt on every run, so keeping them only costs disk)."""
        ...

    def prefetch(self, queries: Mapping[str, str]) -> float:
        """Work the config does for all queries at once before they are searched one by one (HyDE passages
        generated in concurrent batches); returns its seconds, 0.0 when there is none."""
        ...

    def stage_report(self) -> dict[str, Any]:
        """What the stages did over the run (per-stage latency percentiles, cache counts); {} for none."""
        ...


class ConfigKind(Protocol):
    name: str

    def parse(self, table: dict[str, Any], *, where: Where) -> EvalConfig:
        """Validate one [[configs]] table; raise InvalidInput that starts with `where(key)`."""
        ...

    def prepare(self, config: Any, ctx: RunContext) -> Retriever:
        """Build whatever the config needs (collections, indexes) and time it."""
        ...
