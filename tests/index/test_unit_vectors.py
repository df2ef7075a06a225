"""Unit length for cosine similarity across float32's whole range (index/unit_vectors.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ragsvc.index.unit_vectors import NotNormalisable, unit_rows, unit_vector


@pytest.mark.parametrize("magnitude", [1e-44, 1e-30, 1e-20, 1.0, 1e20, 1e38, 3.4e38])
def test_direction_survives_any_magnitude(magnitude: float) -> None:
    direction = np.random.default_rng(0).standard_normal(384)
    direction /= np.abs(direction).max()  # the largest component is +-magnitude, a finite float32 for each case
    expected = direction / np.linalg.norm(direction)
    got = unit_vector((direction * magnitude).astype(np.float32))
    assert got.dtype == np.float32
    if magnitude < 1e-38:  # subnormal inputs keep only a few bits of each component
        assert float(got @ expected) > 0.95
    else:
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_plain_division_fails_where_this_does_not() -> None:
    """The failure modes this module exists for, so the test above means something."""
    big = np.full(384, 1e38, np.float32)
    tiny = np.full(384, 1e-30, np.float32)
    with np.errstate(over="ignore", under="ignore"):
        assert not np.any(big / np.linalg.norm(big))  # inf norm: all zeros
        assert np.linalg.norm(tiny) == 0.0  # the square underflows
    assert np.allclose(unit_vector(big), 1 / np.sqrt(384))
    assert np.allclose(unit_vector(tiny), 1 / np.sqrt(384))


def test_rows_are_independent_and_bad_rows_named() -> None:
    rows = np.array([[3.0, 4.0], [1e38, 1e38], [0.0, -2e-30]], np.float32)
    np.testing.assert_allclose(unit_rows(rows), [[0.6, 0.8], [2**-0.5, 2**-0.5], [0.0, -1.0]], atol=1e-7)
    assert unit_rows(np.zeros((0, 4), np.float32)).shape == (0, 4)
    with pytest.raises(NotNormalisable, match="row 1 is all zeros"):
        unit_rows(np.array([[1.0, 0.0], [0.0, 0.0]], np.float32))
    with pytest.raises(NotNormalisable, match="row 0 contains NaN"):
        unit_rows(np.array([[np.nan, 0.0], [0.0, 0.0]], np.float32))
    with pytest.raises(NotNormalisable, match="the vector contains NaN or infinity"):
        unit_vector(np.array([np.inf, 1.0], np.float32))
    with pytest.raises(ValueError, match="takes \\(n, dim\\)"):
        unit_rows(np.zeros(3, np.float32))
