from __future__ import annotations

import numpy as np
import pytest

from ragsvc.errors import IndexCorrupt
from ragsvc.index.rescore import RescoreStore

TOLERANCE = {"float32": 1e-5, "float16": 2e-3, "int8": 2e-2, "int4": 0.25}


def _vectors(n: int = 500, dim: int = 33, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "int4"])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_scores_approximate_exact_ones(dtype, metric):
    v = _vectors()  # odd width: int4 packs two dims a byte and must pad the last one
    store = RescoreStore(v.shape[1], dtype=dtype, metric=metric)
    store.add(np.arange(10, 510), v)
    found, rows = store.rows_for(np.array([12, 13, 999, 509]))
    assert found.tolist() == [12, 13, 509]
    exact = v[found - 10] @ v[0] if metric == "ip" else -((v[found - 10] - v[0]) ** 2).sum(axis=1)
    assert np.allclose(store.scores(v[0], rows), exact, atol=TOLERANCE[dtype])
    width = 8
    prefix = v[found - 10, :width] @ v[0, :width]
    if metric == "ip":
        assert np.allclose(store.scores(v[0], rows, width=width), prefix, atol=TOLERANCE[dtype])


def test_int4_is_half_the_bytes_of_int8():
    v = _vectors(dim=64)
    sizes = {}
    for dtype in ("int8", "int4"):
        store = RescoreStore(64, dtype=dtype)
        store.add(np.arange(len(v)), v)
        sizes[dtype] = store.nbytes
    per_vector_overhead = 4 + 8 + 1  # scale, id, alive flag
    assert sizes["int4"] == len(v) * (32 + per_vector_overhead)
    assert sizes["int8"] == len(v) * (64 + per_vector_overhead)


def test_deletes_readds_and_unordered_ids_survive_save_load(tmp_path):
    v = _vectors()
    store = RescoreStore(v.shape[1], dtype="int8")
    store.add(np.arange(100, 600)[::-1], v)  # descending: the id -> row map must sort
    store.delete(np.array([150, 151, 7]))
    store.add(np.array([152]), v[:1])  # replace
    assert len(store) == 498
    assert store.rows_for(np.array([150, 152]))[0].tolist() == [152]
    ids = store.scan(v[0], 3).ids[0]  # (3,)
    assert ids[0] in (152, 599)  # v[0] is stored under both ids now
    store.save(tmp_path / "r.npz")
    loaded = RescoreStore.load(tmp_path / "r.npz", dim=v.shape[1], dtype="int8", metric="ip")
    assert len(loaded) == 498
    assert np.array_equal(loaded.scan(v[0], 5).ids, store.scan(v[0], 5).ids)
    with pytest.raises(IndexCorrupt):
        RescoreStore.load(tmp_path / "r.npz", dim=v.shape[1], dtype="int4", metric="ip")


@pytest.mark.parametrize("layout", ["consecutive", "gapped", "deleted", "readded"])
def test_lookup_finds_exactly_the_live_ids_in_every_layout(layout, tmp_path):
    """Consecutive ids take the row = id - first shortcut; every other layout searches: both must agree."""
    v = _vectors(300)
    store = RescoreStore(v.shape[1], dtype="int8")
    ids = np.arange(50, 350) if layout != "gapped" else np.arange(50, 650, 2)
    store.add(ids[:200], v[:200])
    store.add(ids[200:], v[200:])
    live = set(ids.tolist())
    if layout in ("deleted", "readded"):
        store.delete(ids[10:12])
        live -= set(ids[10:12].tolist())
    if layout == "readded":
        store.add(ids[20:21], v[:1])  # replaces: compacts, then appends out of order
    probe = np.array([ids[0] - 1, *ids[[0, 10, 11, 20, 150, -1]], ids[-1] + 1, 10_000])
    expected = [int(i) for i in probe if int(i) in live]
    found, rows = store.lookup(probe)  # before saving: deleted rows are still in place, flagged dead
    assert [int(i) for i in probe[found]] == expected
    assert np.array_equal(store._ids[rows[found]], probe[found])  # each found id maps to its own row
    store.save(tmp_path / "r.npz")  # compacts
    loaded = RescoreStore.load(tmp_path / "r.npz", dim=store.dim, dtype=store.dtype, metric=store.metric)
    for compacted in (store, loaded):
        found, rows = compacted.lookup(probe)
        assert [int(i) for i in probe[found]] == expected
        assert np.array_equal(compacted._ids[rows[found]], probe[found])
