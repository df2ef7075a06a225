"""Rerankers: rescore a retrieved shortlist with something slower and better than the first stage.

    Reranker (Protocol)        rerank(query, hits, *, top_n) -> RerankResult
    ├── EmbedderReranker       cosine under a stronger embedder; chunk vectors cached per (embedder, chunk)
    ├── LLMReranker            P("yes") of a yes/no relevance judgement, from token logprobs
    └── CrossEncoderReranker   a sentence-transformers CrossEncoder from a local folder

Every reranker returns the hits with their new scores, best first (ties keep the input order), cut to
`top_n`; the first-stage score and rank of each hit ride along in the result (Hit has no room for two scores,
and later stages, evals and the API all want to see how far a reranker moved a hit). Stage timings are in
`timings_ms`, as in SearchResult. `make_reranker(name, ...)` builds one by its name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ragsvc.embed.embedder import Embedder
from ragsvc.errors import InvalidInput, NotFound
from ragsvc.llm.generator import Generation, Generator, Message
from ragsvc.retrieval.fuse import min_max
from ragsvc.store.vector_cache import InMemoryVectorCache, VectorCache
from ragsvc.types import Hit

logger = logging.getLogger(__name__)

RERANKERS: tuple[str, ...] = ("embedder", "llm", "cross-encoder")


@dataclass(frozen=True, slots=True)
class RerankResult:
    hits: list[Hit]
    """Best first by the reranker's score (now `Hit.score`), at most top_n of them."""
    first_stage_scores: tuple[float, ...]
    """`hits[i]`'s score before reranking."""
    first_stage_ranks: tuple[int, ...]
    """`hits[i]`'s 1-based rank before reranking."""
    reranker: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    """What the reranker did, by name (cache hits, passages embedded, judgements without a yes/no)."""


@runtime_checkable
class Reranker(Protocol):
    name: str

    def rerank(self, query: str, hits: Sequence[Hit], *, top_n: int | None = None) -> RerankResult:
        """`hits` rescored for `query`, best first, at most `top_n` (None = all)."""
        ...


def check_top_n(top_n: int | None) -> None:
    if top_n is not None and top_n < 1:
        raise InvalidInput(f"top_n must be at least 1 (or None for all hits), got {top_n}")


def ranked(
    hits: Sequence[Hit], scores: Sequence[float], *, top_n: int | None, reranker: str,
    timings_ms: dict[str, float] | None = None, counts: dict[str, int] | None = None,
) -> RerankResult:
    """The result of giving `hits[i]` the score `scores[i]`: sorted by score (NaN last), ties in input order."""
    if len(scores) != len(hits):
        raise RuntimeError(f"{reranker} returned {len(scores)} scores for {len(hits)} hits")
    keyed = [(-s if not math.isnan(s) else math.inf, i) for i, s in enumerate(float(s) for s in scores)]
    order = [i for _, i in sorted(keyed)][: top_n if top_n is not None else len(hits)]
    return RerankResult(
        hits=[replace(hits[i], score=float(scores[i])) for i in order],
        first_stage_scores=tuple(hits[i].score for i in order), first_stage_ranks=tuple(i + 1 for i in order),
        reranker=reranker, timings_ms=dict(timings_ms or {}), counts=dict(counts or {}),
    )


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbedderReranker:
    """Cosine between the query and each hit under `embedder`, usually stronger (or wider) than the one the
    index was built with: a query embeds once, and a chunk's vector is computed the first time the chunk is in
    a shortlist and then served from `cache`, so a warm query costs one query embedding and a cache read.

    Query and document prompts (EmbeddingGemma's "task: search result | query: " / "title: none | text: ")
    are the embedder's business: `embed_query` and `embed_documents` apply them. The cache is keyed by
    `cache_key` (default `embedder.id`, which names the model, its width and a digest of its document prompt,
    so two prompts never share vectors); give another key only for what the id cannot see, such as dtype.
    """

    name = "embedder"

    def __init__(self, embedder: Embedder, cache: VectorCache | None = None, *, cache_key: str | None = None) -> None:
        self._embedder = embedder
        self._cache = cache if cache is not None else InMemoryVectorCache()
        self.cache_key = cache_key or embedder.id

    def passage_vectors(self, hits: Sequence[Hit]) -> tuple[np.ndarray, dict[str, int], dict[str, float]]:
        """(len(hits), dim) float32 rows for `hits`, from the cache or embedded (then cached); counts (hits served
        from the cache, passages embedded); timings."""
        hashes = [text_hash(h.text) for h in hits]
        start = time.perf_counter()
        found = self._cache.get(self.cache_key, [h.chunk_id for h in hits], hashes)
        timings = {"cache_ms": _ms(start)}
        counts = {"cache_hits": sum(h.chunk_id in found for h in hits), "embedded": 0}
        missing: dict[int, int] = {}  # chunk id -> index of its first hit, embedded once
        for i, h in enumerate(hits):
            if h.chunk_id not in found:
                missing.setdefault(h.chunk_id, i)
        if missing:
            start = time.perf_counter()
            new = self._embedder.embed_documents([hits[i].text for i in missing.values()])  # (misses, dim)
            timings["embed_passages_ms"] = _ms(start)
            self._cache.put(self.cache_key, list(missing), [hashes[i] for i in missing.values()], new)
            found.update(zip(missing, new, strict=True))
            counts["embedded"] = len(missing)
        vectors = np.stack([found[h.chunk_id] for h in hits]).astype(np.float32, copy=False)  # (n, dim)
        return vectors, counts, timings

    def rerank(self, query: str, hits: Sequence[Hit], *, top_n: int | None = None) -> RerankResult:
        check_top_n(top_n)
        if not hits:
            return ranked([], [], top_n=top_n, reranker=self.name)
        start = time.perf_counter()
        query_vector = self._embedder.embed_query(query)  # (dim,)
        timings = {"embed_query_ms": _ms(start)}
        vectors, counts, more = self.passage_vectors(hits)
        timings.update(more)
        scores = cosine(vectors, query_vector)
        return ranked(hits, scores.tolist(), top_n=top_n, reranker=self.name, timings_ms=timings, counts=counts)


def cosine(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """(n,) cosine of each row of (n, dim) `vectors` with (dim,) `query`; normalises, since not every user's
    embedder does (the Embedder protocol asks for unit rows, and then this costs two norms)."""
    norms = np.linalg.norm(vectors, axis=1) * float(np.linalg.norm(query))  # (n,)
    return (vectors @ query) / np.where(norms > 0, norms, 1.0)


JUDGE_SYSTEM = "You judge search results. Reply with one word: yes or no."
JUDGE_QUESTION = "Does the passage answer the query or support an answer to it? Answer yes or no."


def judgement_prompt(query: str, passage: str, *, max_passage_chars: int = 2000) -> list[Message]:
    """Chat messages asking whether `passage` is relevant to `query`; the passage is cut to a character cap so
    that every prompt of a batch fits the model's context."""
    user = f"Query: {query}\n\nPassage: {passage[:max_passage_chars]}\n\n{JUDGE_QUESTION}"
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def yes_probability(generation: Generation) -> float | None:
    """P(yes | yes or no) from the first generated token: Y / (Y + N), where Y sums exp(logprob) over the
    token's alternatives (its top logprobs plus the chosen token when not among them) whose text, stripped and
    lowercased, is "yes", and N the same for "no". So "Yes", " yes" and "YES" all count, and the answer does not
    depend on how likely the model found anything else. None when neither label is among the alternatives (the
    model did not answer in the format asked; raise top_logprobs, or treat it as undecided)."""
    if not generation.tokens:
        return None
    first = generation.tokens[0]
    alternatives = list(first.top)  # a list, not a dict: two token ids may decode to the same text
    if first.token not in {text for text, _ in alternatives}:
        alternatives.append((first.token, first.logprob))
    mass = {"yes": 0.0, "no": 0.0}
    for text, logprob in alternatives:
        label = text.strip().lower()
        if label in mass:
            mass[label] += math.exp(logprob)
    total = mass["yes"] + mass["no"]
    return mass["yes"] / total if total > 0 else None


class LLMReranker:
    """Pointwise relevance from a language model: one yes/no judgement per hit, scored by `yes_probability`,
    all of a query's hits sent in one `generate_many` call so a batching engine judges them together
    (one token each, greedy). A judgement with neither label among the top alternatives scores `undecided`
    (0.5 by default: no evidence either way) and is counted in `counts["undecided"]`."""

    name = "llm"

    def __init__(self, generator: Generator, *, top_logprobs: int = 10, max_passage_chars: int = 2000,
                 undecided: float = 0.5) -> None:
        self._generator = generator
        self.top_logprobs = top_logprobs
        self.max_passage_chars = max_passage_chars
        self.undecided = undecided

    def rerank(self, query: str, hits: Sequence[Hit], *, top_n: int | None = None) -> RerankResult:
        check_top_n(top_n)
        if not hits:
            return ranked([], [], top_n=top_n, reranker=self.name)
        prompts = [judgement_prompt(query, h.text, max_passage_chars=self.max_passage_chars) for h in hits]
        start = time.perf_counter()
        generations = self._generator.generate_many(prompts, max_tokens=1, temperature=0.0, logprobs=True,
                                                    top_logprobs=self.top_logprobs)
        timings = {"judge_ms": _ms(start)}
        judged = [yes_probability(g) for g in generations]
        scores = [self.undecided if p is None else p for p in judged]
        counts = {"judged": len(hits), "undecided": sum(p is None for p in judged)}
        return ranked(hits, scores, top_n=top_n, reranker=self.name, timings_ms=timings, counts=counts)


TRAINING_FILE = "ragsvc-training.json"
"""Written by `ragsvc rerank train` beside a model it trained: how, how it did on held-out queries, and the
`first_stage_weight` it was checked with (read by CrossEncoderReranker)."""


def blend_scores(model: Sequence[float], first_stage: Sequence[float], first_stage_weight: float) -> list[float]:
    """`(1 - w) * norm(model) + w * norm(first stage)`, each min-max normalised over the shortlist (as the convex
    fusion does): a reranker that keeps part of the first stage's judgement instead of replacing it."""
    if not 0 <= first_stage_weight <= 1:
        raise InvalidInput(f"first_stage_weight must be in [0, 1], got {first_stage_weight}")
    if first_stage_weight == 0:
        return [float(s) for s in model]
    return [(1 - first_stage_weight) * m + first_stage_weight * f
            for m, f in zip(min_max(model), min_max(first_stage), strict=True)]


def trained_first_stage_weight(folder: Path) -> float:
    """The first-stage weight a folder trained by `ragsvc rerank train` was checked with; 0 for any other."""
    try:
        record = json.loads((folder / TRAINING_FILE).read_text())
    except FileNotFoundError:
        return 0.0
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{str(folder / TRAINING_FILE)!r} is unreadable ({exc}); remove it to use the model "
                           "without the first-stage blend it records") from exc
    return float(record.get("first_stage_weight", 0.0))


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder (query, passage) -> relevance, from a local folder only: any
    CrossEncoder saved with `save()` or a Hugging Face sequence-classification folder with one output.

    Scores are what `CrossEncoder.predict` returns (its activation applied: a sigmoid for one-label models
    unless the folder says otherwise), so they compare across queries. A folder trained by `ragsvc rerank
    train` may record a `first_stage_weight` w > 0 (TRAINING_FILE); then the score is `blend_scores` of the
    model's and the first stage's, as the training's held-out check measured it, and compares within one
    query only."""

    name = "cross-encoder"

    def __init__(self, model_dir: str | Path, *, device: str = "cpu", batch_size: int = 32,
                 max_length: int | None = None) -> None:
        path = Path(model_dir).expanduser()
        if not path.is_dir():
            raise NotFound(
                f"cross-encoder folder {str(path)!r} does not exist; pass the path of a local sentence-transformers "
                "CrossEncoder folder (ragsvc never downloads models), or use the 'embedder' or 'llm' reranker"
            )
        from sentence_transformers import CrossEncoder  # heavy import, kept out of module load

        try:
            self._model = CrossEncoder(str(path), device=device, local_files_only=True, max_length=max_length)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{str(path)!r} is not a loadable cross-encoder folder ({exc}); it needs a "
                               "config.json, weights and tokenizer files") from exc
        if self._model.num_labels != 1:
            raise InvalidInput(f"{str(path)!r} has {self._model.num_labels} outputs; a reranking cross-encoder "
                               "has one relevance output (num_labels=1)")
        self.batch_size = batch_size
        self.first_stage_weight = trained_first_stage_weight(path)

    def rerank(self, query: str, hits: Sequence[Hit], *, top_n: int | None = None) -> RerankResult:
        check_top_n(top_n)
        if not hits:
            return ranked([], [], top_n=top_n, reranker=self.name)
        start = time.perf_counter()
        scores = self._model.predict([(query, h.text) for h in hits], batch_size=self.batch_size,
                                     show_progress_bar=False, convert_to_numpy=True)  # (n,)
        timings = {"cross_encoder_ms": _ms(start)}
        blended = blend_scores(np.asarray(scores, np.float32).reshape(-1).tolist(), [h.score for h in hits],
                               self.first_stage_weight)
        return ranked(hits, blended, top_n=top_n, reranker=self.name, timings_ms=timings)


def make_reranker(
    name: str, *, embedder: Embedder | None = None, cache: VectorCache | None = None,
    generator: Generator | None = None, model_dir: str | Path | None = None,
) -> Reranker:
    """The reranker called `name` (one of RERANKERS), built from the parts it needs."""
    if name == "embedder":
        if embedder is None:
            raise InvalidInput("the 'embedder' reranker needs an embedder to rescore with; none is configured")
        return EmbedderReranker(embedder, cache)
    if name == "llm":
        if generator is None:
            raise InvalidInput("the 'llm' reranker needs a language model; none is configured (start the service "
                               "with an in-process or remote LLM, or pick another reranker)")
        return LLMReranker(generator)
    if name == "cross-encoder":
        if model_dir is None:
            raise InvalidInput("the 'cross-encoder' reranker needs model_dir, a local CrossEncoder folder")
        return CrossEncoderReranker(model_dir)
    raise InvalidInput(f"unknown reranker {name!r}; use one of {', '.join(RERANKERS)}")
