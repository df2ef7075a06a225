"""The retrieval pipeline and the generator, built from the settings: the composition the API and the CLI share.

The generator is the OpenAI-compatible server named by `generator.url` (several, comma-separated, make a
pool: `ragsvc.llm.pool`), or else whatever local model the caller hosts (the API's in-process engine under
`serve --with-model`; the CLI's own engine for `ask`); with neither, HyDE, the LLM reranker and answers
are refused with a 400 that says how to configure one. Rerankers load their models on first use, so a
process that never reranks never pays for them. Parts are built at most once per Composition (requests run
in a thread pool).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from ragsvc.config import Settings
from ragsvc.embed.embedder import SentenceTransformerEmbedder
from ragsvc.errors import InvalidInput
from ragsvc.llm.generator import Generator
from ragsvc.llm.pool import generator_for
from ragsvc.retrieval.hyde import HyDE
from ragsvc.retrieval.pipeline import RetrievalPipeline
from ragsvc.retrieval.rerank import CrossEncoderReranker, EmbedderReranker, LLMReranker, Reranker
from ragsvc.retrieval.vector_store import VectorStore

NO_GENERATOR = ("no language model is configured; start the server with --with-model, or set "
                "RAGSVC_GENERATOR__URL to an OpenAI-compatible server (e.g. http://127.0.0.1:8001/v1)")


LocalGenerator = Callable[[], Generator | None]
"""Returns the locally hosted model's Generator, or None when this process hosts none."""


class Composition:
    def __init__(self, settings: Settings, local_generator: LocalGenerator = lambda: None) -> None:
        self._local = local_generator
        self._settings = settings
        self._lock = threading.RLock()  # building the pipeline asks for the generator under the lock
        self._generator: Generator | None = None
        self._rerankers: dict[str, Reranker] = {}
        self._pipeline: RetrievalPipeline | None = None

    def generator(self) -> Generator | None:
        with self._lock:
            if self._generator is None:
                self._generator = self._make_generator()
            return self._generator

    def require_generator(self) -> Generator:
        generator = self.generator()
        if generator is None:
            raise InvalidInput(NO_GENERATOR)
        return generator

    def _make_generator(self) -> Generator | None:
        config = self._settings.generator
        if config.url:
            return generator_for(config.url, model=config.model, api_key=config.api_key, timeout_s=config.timeout_s)
        return self._local()

    def pipeline(self, store: VectorStore) -> RetrievalPipeline:
        generator = self.generator()
        with self._lock:
            if self._pipeline is None or self._pipeline.store is not store:
                hyde = HyDE(generator, store.shared_embedder()) if generator is not None else None
                self._pipeline = RetrievalPipeline(store, hyde=hyde, rerankers=_LazyRerankers(self, store))
            return self._pipeline

    def reranker_names(self) -> list[str]:
        names = []
        if self._settings.rerank.embedder:
            names.append("embedder")
        if self._settings.rerank.cross_encoder:
            names.append("cross-encoder")
        if self.generator() is not None:
            names.append("llm")
        return names

    def reranker(self, name: str, store: VectorStore) -> Reranker:
        with self._lock:
            if name not in self._rerankers:
                self._rerankers[name] = self._make_reranker(name, store)
            return self._rerankers[name]

    def _make_reranker(self, name: str, store: VectorStore) -> Reranker:
        config = self._settings.rerank
        if name == "embedder" and config.embedder:
            embedder = SentenceTransformerEmbedder(config.embedder, query_prefix=config.embedder_query_prefix,
                                                   document_prefix=config.embedder_document_prefix)
            return EmbedderReranker(embedder, store.catalog.vector_cache())
        if name == "cross-encoder" and config.cross_encoder:
            return CrossEncoderReranker(config.cross_encoder)
        if name == "llm" and self._generator is not None:
            return LLMReranker(self._generator)
        raise KeyError(name)

    def close(self) -> None:
        generator = self._generator
        if generator is not None and hasattr(generator, "close"):
            generator.close()
        if self._pipeline is not None and self._pipeline.hyde is not None:
            self._pipeline.hyde.close()


class _LazyRerankers(dict[str, Reranker]):
    """A mapping of the configured reranker names that builds each reranker on first lookup."""

    def __init__(self, composition: Composition, store: VectorStore) -> None:
        super().__init__()
        self._composition = composition
        self._store = store
        self._names = set(composition.reranker_names())

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._names))

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, name: str) -> Reranker:
        if name not in self._names:
            raise KeyError(name)
        return self._composition.reranker(name, self._store)
