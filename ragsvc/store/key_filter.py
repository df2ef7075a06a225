"""A Bloom filter over 64-bit keys: "certainly absent" or "perhaps present", in bounded memory.

The embedding cache asks it before duckdb. Almost every text a live ingest embeds is new, and without the
filter each one cost a lookup statement before embedding and an `ON CONFLICT` insert (a primary-key probe)
after; a key the filter has never seen is certainly not in the table, so the lookup is skipped and the row
goes in with a plain insert. A "perhaps" (a cached text, or a false positive at about 1%) takes the old path,
so a wrong answer can only cost a statement, never a wrong vector or a failed insert.

Keys are 64-bit digests (`key_of`); each sets `NUM_PROBES` bits picked by double hashing of its two 32-bit
halves (Kirsch and Mitzenmacher). Additions only: a deleted key stays "perhaps", which is safe. Sized at
`BITS_PER_KEY` bits a key for a given capacity; the owner rebuilds it larger from the table when `count`
passes `capacity`, up to `MAX_BITS`, past which it keeps answering, with a rising false-positive rate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

NUM_PROBES = 7
BITS_PER_KEY = 10
"""With 7 probes: about 0.8% false positives at capacity."""
MIN_BITS = 1 << 16
MAX_BITS = 1 << 28
"""32 MB: room for about 27 million keys at the designed rate."""


def key_of(namespace: str, text: str) -> int:
    """The 64-bit key of `text` within `namespace` (an embedder id): blake2b, so any string works."""
    digest = hashlib.blake2b(f"{namespace}\x00{text}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def keys_of(namespace: str, texts: Iterable[str]) -> np.ndarray:
    """(n,) uint64 keys of `texts` within `namespace`."""
    return np.fromiter((key_of(namespace, t) for t in texts), dtype=np.uint64)


def bits_for(capacity: int) -> int:
    """Bits for `capacity` keys at BITS_PER_KEY: a power of two in [MIN_BITS, MAX_BITS]."""
    wanted = max(MIN_BITS, capacity * BITS_PER_KEY)
    return min(MAX_BITS, 1 << (wanted - 1).bit_length())


class KeyFilter:
    """A Bloom filter of `num_bits` bits (a power of two). Not locked: the owner serialises `add`; a
    concurrent `might_contain` may miss a key being added, which its owner must treat as a plain miss."""

    def __init__(self, num_bits: int) -> None:
        if num_bits < 64 or num_bits & (num_bits - 1):
            raise ValueError(f"num_bits must be a power of two of at least 64, got {num_bits}")
        self.num_bits = num_bits
        self.capacity = num_bits // BITS_PER_KEY
        self.count = 0
        """Keys added (with repeats): when it passes `capacity`, false positives climb past the design."""
        self._words = np.zeros(num_bits // 64, dtype=np.uint64)

    @classmethod
    def for_capacity(cls, capacity: int) -> KeyFilter:
        return cls(bits_for(capacity))

    @property
    def full(self) -> bool:
        return self.count > self.capacity and self.num_bits < MAX_BITS

    def add(self, keys: np.ndarray) -> None:
        """Add (n,) uint64 keys."""
        if len(keys):
            positions = self._positions(keys).ravel()
            np.bitwise_or.at(self._words, positions >> np.uint64(6),
                             np.left_shift(np.uint64(1), positions & np.uint64(63)))
            self.count += len(keys)

    def might_contain(self, keys: np.ndarray) -> np.ndarray:
        """(n,) bool: False means the key was certainly never added."""
        if not len(keys):
            return np.zeros(0, dtype=bool)
        positions = self._positions(keys)  # (n, probes)
        bits = (self._words[positions >> np.uint64(6)] >> (positions & np.uint64(63))) & np.uint64(1)
        return np.all(bits == 1, axis=1)

    def _positions(self, keys: np.ndarray) -> np.ndarray:
        """(n, NUM_PROBES) uint64 bit positions: (h1 + i * h2) mod num_bits, h2 odd so the probes differ."""
        keys = np.asarray(keys, dtype=np.uint64)
        low = keys & np.uint64(0xFFFFFFFF)
        high = (keys >> np.uint64(32)) | np.uint64(1)
        steps = np.arange(NUM_PROBES, dtype=np.uint64)
        return (low[:, None] + steps[None, :] * high[:, None]) & np.uint64(self.num_bits - 1)
