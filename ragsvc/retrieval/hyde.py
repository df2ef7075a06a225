"""HyDE: search with the embedding of passages a language model imagines for the query.

Gao et al. (2022), "Precise Zero-Shot Dense Retrieval without Relevance Labels": a generator writes `n`
hypothetical passages that would answer the query; their document embeddings, averaged with the query's own
embedding, replace the query vector. A fake passage sits nearer to real passages in embedding space than a
short question does, even when its facts are wrong. The paper samples 8 passages at temperature 0.7.

The passages are requested concurrently (distinct seeds, so they differ yet stay reproducible); an
in-process engine batches them in one continuous batch, an HTTP server sees parallel requests. Expansions are
cached by (query, model, n, template, temperature, max_tokens), since HyDE costs n generations per query.
With a small model HyDE can hurt: evaluate it (the eval kind `hyde`) before turning it on.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ragsvc.embed.embedder import Embedder
from ragsvc.errors import InvalidInput
from ragsvc.llm.generator import Generation, Generator

TEMPLATES: dict[str, str] = {
    "science": "Write a passage from a scientific paper that supports or refutes the claim.\n"
               "Claim: {query}\nPassage:",
    "code": "Write a short, correct code snippet with a one-line docstring that does what the query asks.\n"
            "Query: {query}\nCode:",
    "general": "Write a short encyclopedia-style passage that answers the question.\n"
               "Question: {query}\nPassage:",
}
"""Prompt per domain; `{query}` is replaced by the query text."""

MAX_PASSAGES = 16


@dataclass(frozen=True, slots=True)
class HydeOptions:
    n: int = 8
    """Hypothetical passages per query."""
    template: str = "general"
    """A key of TEMPLATES: science (claims), code, general."""
    temperature: float = 0.7
    max_tokens: int = 128
    """Length of each passage; longer passages cost decode time and add little to the embedding."""
    seed: int = 0
    """Passage i is sampled with seed + i, so an expansion is reproducible."""

    def __post_init__(self) -> None:
        if not 1 <= self.n <= MAX_PASSAGES:
            raise InvalidInput(f"hyde n must be in [1, {MAX_PASSAGES}], got {self.n}")
        if self.template not in TEMPLATES:
            raise InvalidInput(f"unknown hyde template {self.template!r}; use one of {', '.join(TEMPLATES)}")
        if not 0.0 <= self.temperature <= 2.0:
            raise InvalidInput(f"hyde temperature must be in [0, 2], got {self.temperature}")
        if not 8 <= self.max_tokens <= 512:
            raise InvalidInput(f"hyde max_tokens must be in [8, 512], got {self.max_tokens}")


@dataclass(frozen=True, slots=True)
class HydeExpansion:
    """The vector to search with, the passages behind it, and what they cost."""

    vector: np.ndarray
    """(dim,) float32, L2-normalised mean of the query embedding and the passage embeddings."""
    passages: tuple[str, ...]
    generate_ms: float
    embed_ms: float
    completion_tokens: int
    cached: bool


def hyde_vector(query_vector: np.ndarray, passage_vectors: np.ndarray) -> np.ndarray:
    """Mean of the query vector (dim,) and the passage vectors (n, dim), L2-normalised -> (dim,)."""
    stacked = np.vstack([query_vector.reshape(1, -1), passage_vectors]).astype(np.float32)  # (n + 1, dim)
    mean = stacked.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm if norm > 0 else mean).astype(np.float32)


class HyDE:
    """Query expansion through a Generator and an Embedder; thread-safe, with a bounded LRU cache."""

    def __init__(self, generator: Generator, embedder: Embedder, *, cache_size: int = 1024,
                 max_workers: int = MAX_PASSAGES) -> None:
        self.generator = generator
        self.embedder = embedder
        self._cache: OrderedDict[tuple[object, ...], HydeExpansion] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="hyde")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def expand(self, query: str, options: HydeOptions = HydeOptions()) -> HydeExpansion:
        if not query.strip():
            raise InvalidInput("query is empty; HyDE needs text to write passages for")
        key = (query, self.generator.model, options.n, options.template, options.temperature, options.max_tokens,
               options.seed, self.embedder.id)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return _as_cached(hit)
        started = time.perf_counter()
        generations = self._generate(query, options)
        generate_ms = (time.perf_counter() - started) * 1000
        passages = tuple(g.text.strip() for g in generations)
        started = time.perf_counter()
        query_vector = self.embedder.embed_query(query)
        nonempty = [p for p in passages if p]
        passage_vectors = (self.embedder.embed_documents(nonempty) if nonempty
                           else np.zeros((0, query_vector.shape[0]), dtype=np.float32))
        vector = hyde_vector(query_vector, passage_vectors)
        embed_ms = (time.perf_counter() - started) * 1000
        expansion = HydeExpansion(vector, passages, generate_ms, embed_ms,
                                  sum(g.usage.completion_tokens for g in generations), cached=False)
        with self._lock:
            self._cache[key] = expansion
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return expansion

    def _generate(self, query: str, options: HydeOptions) -> Sequence[Generation]:
        prompt = [{"role": "user", "content": TEMPLATES[options.template].format(query=query)}]
        futures = [self._pool.submit(self.generator.generate, prompt, max_tokens=options.max_tokens,
                                     temperature=options.temperature, seed=options.seed + i)
                   for i in range(options.n)]
        return [f.result() for f in futures]


def _as_cached(expansion: HydeExpansion) -> HydeExpansion:
    return HydeExpansion(expansion.vector, expansion.passages, 0.0, 0.0, 0, cached=True)
