"""The Bloom filter in front of the embedding cache: never a false negative, false positives near the design."""

import numpy as np
import pytest

from ragsvc.store import key_filter
from ragsvc.store.key_filter import BITS_PER_KEY, MAX_BITS, MIN_BITS, KeyFilter, bits_for, key_of, keys_of


def test_every_added_key_is_reported_and_few_others_are():
    rng = np.random.default_rng(0)
    added, others = rng.integers(0, 2**63, 20_000, dtype=np.uint64), rng.integers(0, 2**63, 20_000, dtype=np.uint64)
    f = KeyFilter.for_capacity(len(added))
    f.add(added[:7])
    f.add(added[7:])
    assert f.might_contain(added).all(), "a Bloom filter has no false negatives"
    rate = f.might_contain(others).mean()
    assert rate < 0.02, f"false positives {rate:.3%} at capacity (designed for about 0.8%)"
    assert f.count == len(added) and not f.full


def test_an_empty_filter_contains_nothing_and_keys_depend_on_namespace_and_text():
    f = KeyFilter(1024)
    assert not f.might_contain(keys_of("m", ["a", "b"])).any()
    assert f.might_contain(np.zeros(0, np.uint64)).shape == (0,)
    assert key_of("m", "a") != key_of("n", "a") and key_of("m", "a") != key_of("m", "b")
    assert key_of("m", "\ud800") == key_of("m", "\ud800"), "any str has a key, even one UTF-8 cannot encode"
    assert keys_of("m", ["a"])[0] == key_of("m", "a")


def test_sizes_are_bounded_powers_of_two_and_full_says_when_to_grow(monkeypatch):
    assert bits_for(0) == MIN_BITS and bits_for(10**12) == MAX_BITS
    assert bits_for(100_000) >= 100_000 * BITS_PER_KEY and bits_for(100_000) & (bits_for(100_000) - 1) == 0
    f = KeyFilter(64)
    f.add(np.arange(f.capacity + 1, dtype=np.uint64))
    assert f.full
    monkeypatch.setattr(key_filter, "MAX_BITS", 64)
    assert not f.full, "at the size bound it keeps answering instead of asking to grow"
    for bad in (0, 100, 32):
        with pytest.raises(ValueError, match="power of two"):
            KeyFilter(bad)
