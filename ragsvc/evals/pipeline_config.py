"""The `pipeline` config kind: one RetrievalPipeline setting (mode, fusion, HyDE, rerank) per config.

    [[configs]]
    name = "hybrid-rerank"
    kind = "pipeline"
    mode = "hybrid"           # dense | lexical | hybrid
    fusion = "rrf"            # rrf | convex (alpha = weight of the dense list)
    candidates = 100          # hits each retriever returns before fusing / reranking
    hyde = { n = 4, template = "science", temperature = 0.7, max_tokens = 96 }
    rerank = { name = "embedder", candidates = 30, model = "embeddinggemma-300m", dtype = "bfloat16",
               query_prefix = "task: search result | query: ", document_prefix = "title: none | text: " }
    hyde_concurrency = 8      # optional: queries whose HyDE passages are generated at once (one engine batch)
    compare_to = "hybrid"     # optional: the report shows this config's paired delta against that one

One kind with optional stages rather than a kind per stage, because the stages compose: "hybrid + HyDE +
rerank" is one table, and a suite reads as the list of settings a user could send to the search API.

Every pipeline config searches the suite's corpus collection (exact dense index + BM25), which the runner
keeps between runs (one per suite name and chunking). That keeps the comparison about the stages, not about
index structures (the `index` kind measures those), and keeps chunk ids stable, so a reranker's per-chunk
vector cache (in the store's duckdb, keyed by chunk id) is warm when the same suite runs again.

`rerank.model` names a folder under the models root (`ragsvc eval run --models-root DIR` or
RAGSVC_EVAL__MODELS_ROOT) or a packaged alias (`minilm`), never a machine path: suites are shared files.
Configs with HyDE or the `llm` reranker use the run's language model (`--generator-model` /
`--generator-url`); the runner refuses to start without one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ragsvc.errors import InvalidInput
from ragsvc.evals.configs import Where
from ragsvc.evals.index_config import validate_config_name
from ragsvc.retrieval.fuse import FUSION_METHODS, FUSION_MODES, RRF_K, FusionMethod, FusionMode
from ragsvc.retrieval.hyde import HydeOptions
from ragsvc.retrieval.pipeline import MAX_CANDIDATES, RetrievalOptions
from ragsvc.retrieval.rerank import RERANKERS

MODEL_ALIASES = ("minilm",)
"""Embedders packaged with ragsvc, usable as `rerank.model` without a models root."""


@dataclass(frozen=True, slots=True)
class RerankSpec:
    name: str
    """A reranker of ragsvc.retrieval.rerank: embedder, llm or cross-encoder."""
    candidates: int = 30
    """How many of the first-stage hits are rescored; the rest keep their order below them."""
    model: str | None = None
    """embedder / cross-encoder: a folder under the models root, or a packaged alias."""
    query_prefix: str = ""
    document_prefix: str = ""
    """Prompts of the reranking embedder (EmbeddingGemma: "task: search result | query: " / "title: none | text: ")."""
    dtype: str | None = None
    """embedder: weight precision, "bfloat16" or "float32" (None = the folder's); bfloat16 halves the CPU cost."""

    def __post_init__(self) -> None:
        if self.name not in RERANKERS:
            raise InvalidInput(f"unknown reranker {self.name!r}; use one of {', '.join(RERANKERS)}")
        if not 1 <= self.candidates <= MAX_CANDIDATES:
            raise InvalidInput(f"rerank candidates must be in [1, {MAX_CANDIDATES}], got {self.candidates}")
        needs_model = self.name in ("embedder", "cross-encoder")
        if needs_model and not self.model:
            raise InvalidInput(f"the {self.name!r} reranker needs `model`: a folder under the models root "
                               "(--models-root / RAGSVC_EVAL__MODELS_ROOT) or a packaged alias (minilm)")
        if not needs_model and self.model is not None:
            raise InvalidInput("the 'llm' reranker uses the run's language model; drop `model`")
        if self.model is not None:
            check_model_name(self.model)
        if self.dtype not in (None, "bfloat16", "float32"):
            raise InvalidInput(f"rerank dtype {self.dtype!r} is unknown; use bfloat16 or float32")
        if self.dtype is not None and self.name != "embedder":
            raise InvalidInput("rerank dtype applies to the 'embedder' reranker only")


def check_model_name(model: str) -> None:
    path = Path(model)
    if path.is_absolute() or model.startswith("~") or ".." in path.parts:
        raise InvalidInput(f"model {model!r} is a machine path; name a folder under the models root instead "
                           "(--models-root DIR or RAGSVC_EVAL__MODELS_ROOT), so the suite works on every machine")


def resolve_model(model: str, models_root: Path | None) -> str:
    """What SentenceTransformerEmbedder / CrossEncoderReranker load: an alias as is, else the folder."""
    if model in MODEL_ALIASES:
        return model
    if models_root is None:
        raise InvalidInput(f"model {model!r} is read from a models root: pass --models-root DIR (the folder "
                           f"holding {model}/) or set RAGSVC_EVAL__MODELS_ROOT")
    folder = Path(models_root).expanduser() / model
    if not folder.is_dir():
        raise InvalidInput(f"model folder {model!r} not found under the models root {models_root}; check "
                           "--models-root / RAGSVC_EVAL__MODELS_ROOT")
    return str(folder.resolve())


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    name: str
    mode: FusionMode = "dense"
    fusion: FusionMethod = "rrf"
    candidates: int = 100
    alpha: float = 0.5
    rrf_k: float = RRF_K
    hyde: HydeOptions | None = None
    rerank: RerankSpec | None = None
    hyde_concurrency: int = 1
    """Queries expanded at once before the searches: their n passages each share the engine's batches, which
    on a CPU is several times the throughput of one query's n; per-query HyDE time is then measured under
    that load. 1 = each query expanded inside its own search."""
    compare_to: str | None = None
    """A config this one adds a stage to; the report gives the paired delta against it."""
    kind: str = "pipeline"

    def options(self, k: int) -> RetrievalOptions:
        """The pipeline options that return `k` hits (the suite's depth)."""
        return RetrievalOptions(mode=self.mode, k=k, candidates=self.candidates, fusion=self.fusion,
                                rrf_k=self.rrf_k, alpha=self.alpha, hyde=self.hyde,
                                rerank=self.rerank.name if self.rerank else None,
                                rerank_candidates=self.rerank.candidates if self.rerank else 30)

    @property
    def needs_llm(self) -> str | None:
        """Why this config needs the run's language model, or None."""
        if self.hyde is not None:
            return "HyDE writes passages with it"
        if self.rerank is not None and self.rerank.name == "llm":
            return "the 'llm' reranker judges relevance with it"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "mode": self.mode, "fusion": self.fusion,
                "candidates": self.candidates, "alpha": self.alpha, "rrf_k": self.rrf_k,
                "hyde": asdict(self.hyde) if self.hyde else None,
                "rerank": asdict(self.rerank) if self.rerank else None, "hyde_concurrency": self.hyde_concurrency,
                "compare_to": self.compare_to}


_TOP_KEYS = ("name", "kind", "mode", "fusion", "candidates", "alpha", "rrf_k", "hyde", "rerank", "hyde_concurrency",
             "compare_to")
MAX_HYDE_CONCURRENCY = 64
_HYDE_KEYS = tuple(f.name for f in fields(HydeOptions))
_RERANK_KEYS = tuple(f.name for f in fields(RerankSpec))


def _sub_table(table: dict[str, Any], key: str, known: tuple[str, ...], config: str,
               where: Where) -> dict[str, Any] | None:
    raw = table.get(key)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where(key)}: `{key}` in config {config!r} is a table, e.g. {key} = {{ ... }}")
    for sub in raw:
        if sub not in known:
            raise InvalidInput(f"{where(key)}: unknown key {sub!r} in {key} of config {config!r}; known keys: "
                               f"{', '.join(known)}")
    return raw


def parse_pipeline_config(table: dict[str, Any], *, where: Where) -> PipelineConfig:
    """Validate one [[configs]] table of kind `pipeline`; errors start with the file and line of the key."""
    name = validate_config_name(table.get("name"), where)
    for key in table:
        if key not in _TOP_KEYS:
            raise InvalidInput(f"{where(key)}: unknown key {key!r} in config {name!r} (kind 'pipeline'); "
                               f"known keys: {', '.join(_TOP_KEYS)}")
    mode, fusion = table.get("mode", "dense"), table.get("fusion", "rrf")
    if mode not in FUSION_MODES:
        raise InvalidInput(f"{where('mode')}: mode {mode!r} is unknown; use one of {', '.join(FUSION_MODES)}")
    if fusion not in FUSION_METHODS:
        raise InvalidInput(f"{where('fusion')}: fusion {fusion!r} is unknown; use one of "
                           f"{', '.join(FUSION_METHODS)}")
    hyde_raw = _sub_table(table, "hyde", _HYDE_KEYS, name, where)
    rerank_raw = _sub_table(table, "rerank", _RERANK_KEYS, name, where)
    try:
        hyde = HydeOptions(**hyde_raw) if hyde_raw is not None else None
    except (InvalidInput, TypeError) as exc:
        raise InvalidInput(f"{where('hyde')}: config {name!r}: {_message(exc)}") from exc
    try:
        rerank = RerankSpec(**rerank_raw) if rerank_raw is not None else None
    except (InvalidInput, TypeError) as exc:
        raise InvalidInput(f"{where('rerank')}: config {name!r}: {_message(exc)}") from exc
    compare_to = table.get("compare_to")
    if compare_to is not None and (not isinstance(compare_to, str) or compare_to == name):
        raise InvalidInput(f"{where('compare_to')}: compare_to names another config of the suite")
    concurrency = table.get("hyde_concurrency", 1)
    if not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_HYDE_CONCURRENCY:
        raise InvalidInput(f"{where('hyde_concurrency')}: hyde_concurrency must be an integer in "
                           f"[1, {MAX_HYDE_CONCURRENCY}], got {concurrency!r}")
    config = PipelineConfig(name=name, mode=mode, fusion=fusion, candidates=table.get("candidates", 100),
                            alpha=table.get("alpha", 0.5), rrf_k=table.get("rrf_k", RRF_K), hyde=hyde,
                            rerank=rerank, hyde_concurrency=concurrency, compare_to=compare_to)
    try:
        config.options(k=1)  # RetrievalOptions checks ranges and combinations (HyDE needs a dense list)
    except (InvalidInput, TypeError) as exc:
        bad = next((k for k in ("candidates", "alpha", "rrf_k", "hyde") if k in _message(exc)), None)
        raise InvalidInput(f"{where(bad) if bad else where()}: config {name!r}: {_message(exc)}") from exc
    return config


def _message(exc: Exception) -> str:
    return getattr(exc, "message", None) or str(exc)
