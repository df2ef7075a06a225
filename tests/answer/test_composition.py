"""The composition's HyDE embeds through the store's batched, locked embedder (the one its searches and ingests
share), and gets the vectors the bare model gives."""

from __future__ import annotations

import numpy as np

from ragsvc.answer.composition import Composition
from ragsvc.config import Settings, StoreSettings
from ragsvc.llm.scripted import ScriptedGenerator
from ragsvc.retrieval.embed_batcher import BatchedEmbedder
from ragsvc.retrieval.hyde import HyDE, HydeOptions
from ragsvc.retrieval.vector_store import VectorStore

PASSAGE = "Paged attention splits the KV cache into fixed-size blocks allocated on demand."


def test_hyde_embeds_through_the_stores_batched_embedder(tmp_path, minilm):
    store = VectorStore.open(tmp_path / "data", embedder=minilm)
    generator = ScriptedGenerator(lambda prompt: PASSAGE)
    composition = Composition(Settings(store=StoreSettings(data_dir=tmp_path / "data")),
                              local_generator=lambda: generator)
    try:
        hyde = composition.pipeline(store).hyde
        assert hyde is not None and hyde.embedder is store.shared_embedder()
        assert isinstance(hyde.embedder, BatchedEmbedder) and hyde.embedder.inner is minilm
        expanded = hyde.expand("what is paged attention?", HydeOptions(n=2)).vector
        bare = HyDE(ScriptedGenerator(lambda prompt: PASSAGE), minilm).expand("what is paged attention?",
                                                                            HydeOptions(n=2)).vector
        np.testing.assert_allclose(expanded, bare, atol=1e-5)
    finally:
        composition.close()
        store.close()
