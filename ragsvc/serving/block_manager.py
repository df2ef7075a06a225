"""BlockManager: fixed-size KV blocks with reference counts, a free list and prefix reuse.

Pure Python (no tensors). The model runner owns the KV memory; this class only decides which block ids
a sequence's tokens live in.

* Prefix caching: once every token of a block has KV, the block is registered under a chained key
  (previous block's hash, this block's token ids). A new sequence whose prompt starts with the same tokens
  reuses those blocks instead of recomputing them. Freed blocks keep their key until they are handed out
  again, so a prefix stays warm as long as memory allows (least-recently freed blocks are reused first).
* Copy-on-write: a block shared by several sequences (after `fork`) is copied before one of them writes
  into it; the copies to perform are queued in `pending_copies` for the model runner.
* Paired check/act methods: `can_allocate`/`allocate`, `can_append`/`may_append`. The act methods raise
  RuntimeError when called without room, which is a scheduler bug, not a user error.
"""

from __future__ import annotations

from dataclasses import dataclass

from ragsvc.serving.sequence import Sequence


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    key: tuple[int, tuple[int, ...]] | None = None
    """(previous block's hash, token ids) once the block is full and registered; None otherwise."""
    hash: int = 0


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, *, enable_prefix_caching: bool = True) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        # A dict used as an ordered set instead of a deque: reviving a cached block removes it from the
        # middle in O(1); handing out pops the least recently freed one from the front.
        self.free: dict[int, None] = dict.fromkeys(range(num_blocks))
        self.cached: dict[tuple[int, tuple[int, ...]], int] = {}
        self.pending_copies: list[tuple[int, int]] = []
        """(src, dst) block copies for copy-on-write, drained by the engine before the next forward."""

    # -- queries ---------------------------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    def _prefix_hits(self, seq: Sequence) -> list[int]:
        """Block ids holding this sequence's leading full blocks, as far as they are cached.

        At most (len - 1) // block_size blocks: the last token is always computed so the step yields logits.
        """
        if not self.enable_prefix_caching:
            return []
        hits: list[int] = []
        prev = 0
        for i in range((len(seq) - 1) // self.block_size):
            key = (prev, tuple(seq.block_tokens(i, self.block_size)))
            block_id = self.cached.get(key)
            if block_id is None:
                break
            hits.append(block_id)
            prev = self.blocks[block_id].hash
        return hits

    def can_allocate(self, seq: Sequence) -> bool:
        hits = self._prefix_hits(seq)
        # Hits already in use by another sequence cost no free block; hits sitting in the free list do.
        in_use = sum(1 for b in hits if self.blocks[b].ref_count > 0)
        return seq.num_blocks_needed(self.block_size) - in_use <= len(self.free)

    def can_append(self, seq: Sequence, num_lookahead_tokens: int = 0) -> bool:
        """Room for the sequence's uncomputed tokens plus `num_lookahead_tokens` speculative ones after them."""
        return self._blocks_to_append(seq, num_lookahead_tokens) <= len(self.free)

    # -- actions ---------------------------------------------------------------------------------------

    def allocate(self, seq: Sequence) -> None:
        """Give a waiting sequence blocks for all its tokens, reusing cached prefix blocks."""
        if seq.block_table:
            raise RuntimeError(f"sequence {seq.request_id} already holds blocks")
        if not self.can_allocate(seq):
            raise RuntimeError("allocate called without room; check can_allocate first")
        hits = self._prefix_hits(seq)
        for block_id in hits:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self.free[block_id]
            block.ref_count += 1
        seq.block_table = list(hits)
        seq.num_hashed_blocks = len(hits)
        seq.num_computed_tokens = len(hits) * self.block_size
        if seq.num_preemptions == 0:  # report the prompt's own cache hit, not a recompute after preemption
            seq.num_cached_tokens = seq.num_computed_tokens
        while len(seq.block_table) < seq.num_blocks_needed(self.block_size):
            seq.block_table.append(self._take_free_block(after=seq.block_table[-1] if seq.block_table else None))

    def may_append(self, seq: Sequence, num_lookahead_tokens: int = 0) -> None:
        """Make room for the sequence's uncomputed tokens (and lookahead slots for drafts): new blocks, and a
        private copy of a shared one."""
        if not self.can_append(seq, num_lookahead_tokens):
            raise RuntimeError("may_append called without room; check can_append first")
        index = seq.num_computed_tokens // self.block_size
        if index < len(seq.block_table) and self.blocks[seq.block_table[index]].ref_count > 1:
            src = seq.block_table[index]
            dst = self._take_free_block()
            self.blocks[src].ref_count -= 1
            seq.block_table[index] = dst
            self.pending_copies.append((src, dst))
        needed = seq.num_blocks_needed(self.block_size, len(seq) + num_lookahead_tokens)
        while len(seq.block_table) < needed:
            seq.block_table.append(self._take_free_block(after=seq.block_table[-1] if seq.block_table else None))

    def trim(self, seq: Sequence) -> None:
        """Free the blocks past the sequence's tokens (lookahead room of rejected drafts). They were never
        registered in the prefix cache (only blocks full of computed, accepted tokens are), and they are freed
        tail first like any other, so the next append takes them back first."""
        keep = seq.num_blocks_needed(self.block_size)
        for block_id in reversed(seq.block_table[keep:]):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count != 0:
                raise RuntimeError(f"lookahead block {block_id} was shared (ref count {block.ref_count})")
            self.free[block_id] = None
        del seq.block_table[keep:]

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Let `child` share all of `parent`'s blocks (parallel samples of one prompt); writes copy on demand."""
        for block_id in parent.block_table:
            self.blocks[block_id].ref_count += 1
        child.block_table = list(parent.block_table)
        child.num_computed_tokens = parent.num_computed_tokens
        child.num_hashed_blocks = parent.num_hashed_blocks

    def deallocate(self, seq: Sequence) -> None:
        """Release the sequence's blocks. Tail blocks are freed first so they are also reused first."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count < 0:
                raise RuntimeError(f"block {block_id} ref count went negative")
            if block.ref_count == 0:
                self.free[block_id] = None
        seq.block_table = []
        seq.num_computed_tokens = 0
        seq.num_hashed_blocks = 0

    def commit(self, seq: Sequence) -> None:
        """Register the sequence's blocks that became full of computed tokens in the prefix cache."""
        if not self.enable_prefix_caching:
            return
        num_full = min(seq.num_computed_tokens // self.block_size, len(seq.block_table))
        for i in range(seq.num_hashed_blocks, num_full):
            block = self.blocks[seq.block_table[i]]
            prev = self.blocks[seq.block_table[i - 1]].hash if i else 0
            key = (prev, tuple(seq.block_tokens(i, self.block_size)))
            if block.key is None:
                block.key, block.hash = key, hash(key)
                self.cached.setdefault(key, block.block_id)
        seq.num_hashed_blocks = max(seq.num_hashed_blocks, num_full)

    # -- internals -------------------------------------------------------------------------------------

    def _blocks_to_append(self, seq: Sequence, num_lookahead_tokens: int = 0) -> int:
        needed = seq.num_blocks_needed(self.block_size, len(seq) + num_lookahead_tokens)
        need = max(needed - len(seq.block_table), 0)
        index = seq.num_computed_tokens // self.block_size
        if index < len(seq.block_table) and self.blocks[seq.block_table[index]].ref_count > 1:
            need += 1
        return need

    def _take_free_block(self, *, after: int | None = None) -> int:
        """The block right after `after` (the sequence's last block) when it is free, else the least recently
        freed one. Consecutive ids let the model runner read a cached context as one slice of the cache instead
        of gathering it block by block, and K/V of a sequence then stream from memory in order."""
        block_id = after + 1 if after is not None and after + 1 in self.free else next(iter(self.free))
        del self.free[block_id]
        block = self.blocks[block_id]
        if block.key is not None:
            # Evict the stale cache entry; only if it still points here (another block may own the key).
            if self.cached.get(block.key) == block_id:
                del self.cached[block.key]
            block.key, block.hash = None, 0
        block.ref_count = 1
        return block_id

    def stats(self, seqs: list[Sequence]) -> dict[str, float]:
        """Occupancy: tokens stored vs slots reserved by the given (running) sequences."""
        used = self.num_blocks - len(self.free)
        tokens = sum(min(len(s), len(s.block_table) * self.block_size) for s in seqs)
        reserved = sum(len(s.block_table) for s in seqs) * self.block_size
        waste = 100.0 * (reserved - tokens) / reserved if reserved else 0.0
        return {
            "num_blocks": self.num_blocks,
            "num_free_blocks": len(self.free),
            "num_used_blocks": used,
            "block_size": self.block_size,
            "tokens_stored": tokens,
            "slots_reserved": reserved,
            "waste_pct": round(waste, 3),
        }
