from __future__ import annotations

import numpy as np
import pytest

from ragsvc.embed.rotation import PcaRotation
from ragsvc.errors import IndexCorrupt, InvalidInput


def _anisotropic(n: int = 2000, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = np.linalg.qr(rng.standard_normal((dim, dim)))[0]  # hide the axes behind a random rotation
    return ((rng.standard_normal((n, dim)) * np.geomspace(3.0, 0.05, dim)) @ mixing).astype(np.float32)


def test_rotation_is_orthogonal_and_preserves_inner_products():
    x = _anisotropic()
    rotation = PcaRotation.fit(x)
    assert np.allclose(rotation.matrix.T @ rotation.matrix, np.eye(x.shape[1]), atol=1e-5)
    y = rotation.apply(x)
    assert np.allclose(x[:20] @ x[20:40].T, y[:20] @ y[20:40].T, atol=1e-3)


def test_leading_dimensions_carry_the_most_variance():
    x = _anisotropic()
    y = PcaRotation.fit(x).apply(x)
    variance = y.var(axis=0)
    assert np.all(np.diff(variance) <= 1e-3 * variance[0])  # non-increasing
    raw_share = x.var(axis=0)[:8].sum() / x.var(axis=0).sum()
    true_share = (np.geomspace(3.0, 0.05, 32)[:8] ** 2).sum() / (np.geomspace(3.0, 0.05, 32) ** 2).sum()  # ~0.88
    assert variance[:8].sum() / variance.sum() > 0.97 * true_share > 2 * raw_share


def test_save_load_and_bad_files(tmp_path):
    rotation = PcaRotation.fit(_anisotropic())
    rotation.save(tmp_path / "r.npz")
    loaded = PcaRotation.load(tmp_path / "r.npz", dim=32)
    assert np.array_equal(loaded.matrix, rotation.matrix)
    with pytest.raises(IndexCorrupt):
        PcaRotation.load(tmp_path / "r.npz", dim=16)
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(IndexCorrupt):
        PcaRotation.load(tmp_path / "bad.npz", dim=32)


def test_bad_input():
    with pytest.raises(InvalidInput):
        PcaRotation.fit(np.ones((1, 4), np.float32))
    with pytest.raises(InvalidInput):
        PcaRotation.fit(_anisotropic()).apply(np.ones(5, np.float32))
