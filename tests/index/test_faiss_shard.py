"""FaissShard on the CPU. The GPU path cannot run here (no CUDA, CPU-only faiss): its selection logic is
tested as a pure function, and the one GPU test is marked `gpu` and skips without CUDA."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from ragsvc.errors import IndexCorrupt, InvalidInput
from ragsvc.index.faiss_shard import FaissShard, auto_nlist, choose_device
from ragsvc.index.spec import IndexSpec
from tests.index.corpus import recall

SPECS = {
    "flat": IndexSpec(backend="faiss_flat"),
    "flat_sq8": IndexSpec(backend="faiss_flat", prefix_quant="sq8"),
    "ivf": IndexSpec(backend="faiss_ivf", ivf_nprobe=16),
    "hnsw": IndexSpec(backend="faiss_hnsw"),
    "hnsw_sq8": IndexSpec(backend="faiss_hnsw", prefix_quant="sq8"),
}


def _built(spec: IndexSpec, corpus) -> FaissShard:
    shard = FaissShard.create(spec, corpus.dim, train_sample=corpus.vectors)
    shard.add(corpus.ids, corpus.vectors)
    return shard


@pytest.mark.parametrize("name", sorted(SPECS))
def test_faiss_recall_vs_exact_and_after_save_load(name, tmp_path, corpus):
    shard = _built(SPECS[name], corpus)
    truth = corpus.truth(10)
    hits = shard.search(corpus.queries, 10)
    found = hits.ids
    assert recall(found, truth) >= 0.95
    assert np.all(np.diff(hits.scores, axis=1) <= 1e-6)  # best first, higher is better
    shard.save(tmp_path / "s.faiss")
    loaded = FaissShard.load(tmp_path / "s.faiss", spec=SPECS[name], dim=corpus.dim, meta=shard.manifest_meta())
    assert (loaded.search(corpus.queries, 10).ids == found).all()
    assert shard.nbytes > 0


def test_ivfpq_alone_is_coarse_but_trains_and_searches(corpus):
    # PQ codes are approximate by design; recall >= 0.95 comes with full-width rescoring (CollectionIndex tests).
    spec = IndexSpec(backend="faiss_ivfpq", pq_m=16, ivf_nprobe=32)
    shard = FaissShard.create(spec, corpus.dim, train_sample=corpus.vectors[:1200])  # k-means is the slow part
    shard.add(corpus.ids, corpus.vectors)
    assert recall(shard.search(corpus.queries, 10).ids, corpus.truth(10)) >= 0.4
    assert shard.nbytes < corpus.vectors.nbytes / 4


@pytest.mark.parametrize("name", ["flat", "ivf", "hnsw"])
def test_delete_filter_and_fewer_than_k(name, corpus):
    shard = _built(SPECS[name], corpus)
    top = int(shard.search(corpus.queries[:1], 1).ids[0, 0])
    shard.delete(np.array([top, 10**9]))
    assert len(shard) == len(corpus.ids) - 1
    assert top not in shard.search(corpus.queries[:1], 10).ids
    ids = shard.search(corpus.queries[:1], 5, allowed_ids=np.array([top, 7, 8])).ids
    assert sorted(ids[0][:2].tolist()) == [7, 8] and (ids[0][2:] == -1).all()
    allowed = corpus.ids[corpus.ids % 2 == 0]
    found = shard.search(corpus.queries, 10, allowed_ids=allowed).ids
    assert np.isin(found[found >= 0], allowed).all()


def test_hnsw_tombstones_survive_save_load(tmp_path, corpus):
    shard = _built(SPECS["hnsw"], corpus)
    shard.delete(corpus.ids[:100])
    shard.save(tmp_path / "s.faiss")
    loaded = FaissShard.load(tmp_path / "s.faiss", spec=SPECS["hnsw"], dim=corpus.dim, meta=shard.manifest_meta())
    assert len(loaded) == len(corpus.ids) - 100
    found = loaded.search(corpus.vectors[:20], 10).ids
    assert not np.isin(found, corpus.ids[:100]).any()
    with pytest.raises(InvalidInput, match="rebuild"):
        loaded.add(corpus.ids[:1], corpus.vectors[:1])


def test_k_larger_than_collection(corpus):
    shard = FaissShard.create(SPECS["flat"], corpus.dim)
    shard.add(corpus.ids[:3], corpus.vectors[:3])
    hits = shard.search(corpus.queries[:1], 6)
    ids, scores = hits.ids, hits.scores
    assert sorted(ids[0][:3].tolist()) == [1, 2, 3] and (ids[0][3:] == -1).all() and np.isneginf(scores[0][3:]).all()


def test_garbage_file_is_corrupt(tmp_path, corpus):
    (tmp_path / "s.faiss").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(IndexCorrupt):
        FaissShard.load(tmp_path / "s.faiss", spec=SPECS["flat"], dim=corpus.dim)


def test_training_backends_need_a_sample(corpus):
    with pytest.raises(ValueError, match="training sample"):
        FaissShard.create(SPECS["ivf"], corpus.dim)


class _RefusingIndex:
    """A faiss index whose writes and searches fail the way SWIG reports a C++ exception."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def add_with_ids(self, *args: object) -> None:
        raise RuntimeError("Error in faiss::IndexIDMap::add_with_ids")

    def search(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("Error in faiss::IndexIDMap::search")


def test_library_failures_are_index_corrupt(corpus):
    shard = _built(SPECS["flat"], corpus)
    shard._index = _RefusingIndex(shard._index)
    with pytest.raises(IndexCorrupt, match="rebuild the index"):
        shard.add(corpus.ids[:1] + 10**6, corpus.vectors[:1])
    with pytest.raises(IndexCorrupt, match="rebuild the index"):
        shard.search(corpus.queries[:2], 3)


def test_device_selection_logic():
    # Fake inputs, because this machine has neither CUDA nor a GPU build of faiss.
    assert choose_device(use_gpu=True, backend="faiss_ivf", num_gpus=1, has_gpu_api=True) == "gpu"
    assert choose_device(use_gpu=True, backend="faiss_flat", num_gpus=0, has_gpu_api=True) == "cpu"
    assert choose_device(use_gpu=True, backend="faiss_flat", num_gpus=1, has_gpu_api=False) == "cpu"
    assert choose_device(use_gpu=True, backend="faiss_hnsw", num_gpus=1, has_gpu_api=True) == "cpu"  # no GPU HNSW
    assert choose_device(use_gpu=False, backend="faiss_ivf", num_gpus=1, has_gpu_api=True) == "cpu"
    # And on this machine a use_gpu spec quietly runs on the CPU with the same API.
    shard = FaissShard.create(IndexSpec(backend="faiss_flat", use_gpu=True), 4)
    assert shard.device == ("gpu" if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() else "cpu")


def test_auto_nlist_keeps_39_points_per_list():
    assert auto_nlist(1000) == 25
    assert auto_nlist(200_000) == int(4 * 200_000**0.5)
    assert auto_nlist(10) == 1


@pytest.mark.gpu
def test_gpu_flat_matches_cpu(corpus):
    if not (hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0):
        pytest.skip("faiss here is a CPU build")
    cpu = _built(SPECS["flat"], corpus)
    gpu = _built(IndexSpec(backend="faiss_flat", use_gpu=True), corpus)
    assert gpu.device == "gpu"
    assert recall(gpu.search(corpus.queries, 10).ids, cpu.search(corpus.queries, 10).ids) >= 0.99
