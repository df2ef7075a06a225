"""Scheduler: continuous batching over a token budget, chunked prefill, preemption by recompute.

Each step picks, in order: running sequences that decode (one token each, or one plus speculative drafts when a
proposer is set: see speculative.py), running sequences still in (chunked) prefill, then waiting sequences in
admission order. Everything shares one `max_num_batched_tokens` budget, so prefill and decode tokens are mixed
in one forward; `max_prefill_tokens` can cap the prompt tokens of a step below that. When the KV blocks run out,
the most recently scheduled sequence is preempted: its blocks are freed and it goes back to the front of the
queue to be recomputed later (its cached full blocks often survive in the prefix cache, which makes the
recompute cheap).

Admission order is FCFS by default: a waiting request that does not fit blocks the ones behind it, so nobody
starves. With "shortest", the fewest prompt tokens go first (a request's first token no longer waits for every
longer prompt that arrived before it), and a request that has waited `max_wait_steps` steps is admitted before
all younger ones, which bounds how long it can be passed over. Neither order changes the total prefill work: the
last request of a simultaneous burst still gets its first token only after the whole burst was read.

Pure Python; tested without a model.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ragsvc.serving.block_manager import BlockManager
from ragsvc.serving.sequence import Sequence, SequenceStatus
from ragsvc.serving.speculative import Proposer

PREFILL_ORDERS = ("arrival", "shortest")


@dataclass(frozen=True)
class ScheduledChunk:
    """Run tokens [start, start + num_new_tokens) of `seq` this step; the last len(draft_token_ids) of them are
    speculative drafts that follow the sequence's real tokens (not in seq.token_ids until accepted)."""

    seq: Sequence
    start: int
    num_new_tokens: int
    draft_token_ids: tuple[int, ...] = ()

    @property
    def samples(self) -> bool:
        """True when this chunk reaches the sequence's last token, so its logits yield the next token."""
        return self.start + self.num_new_tokens - len(self.draft_token_ids) == len(self.seq)

    @property
    def num_logit_rows(self) -> int:
        """Rows of logits this chunk needs: its last real token's, plus one per draft (0 if it does not sample)."""
        return 1 + len(self.draft_token_ids) if self.samples else 0

    @property
    def token_ids(self) -> list[int]:
        """The ids this chunk runs: real tokens from the sequence, then the drafts."""
        real_end = self.start + self.num_new_tokens - len(self.draft_token_ids)
        return self.seq.token_ids[self.start : real_end] + list(self.draft_token_ids)


@dataclass
class SchedulerOutput:
    chunks: list[ScheduledChunk] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    copies: list[tuple[int, int]] = field(default_factory=list)
    """Copy-on-write block copies (src, dst) to apply before the forward."""

    @property
    def num_tokens(self) -> int:
        return sum(c.num_new_tokens for c in self.chunks)


class Scheduler:
    def __init__(
        self,
        block_manager: BlockManager,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        proposer: Proposer | None = None,
        num_speculative_tokens: int = 0,
        max_prefill_tokens: int | None = None,
        prefill_order: str = "arrival",
        max_wait_steps: int = 32,
    ) -> None:
        if prefill_order not in PREFILL_ORDERS:
            raise ValueError(f"prefill_order {prefill_order!r}: use one of {', '.join(PREFILL_ORDERS)}")
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_prefill_tokens = max_prefill_tokens or max_num_batched_tokens
        """Prefill tokens one step may run, after its decodes (EngineConfig.max_prefill_tokens)."""
        self.prefill_order = prefill_order
        self.max_wait_steps = max_wait_steps
        self.num_steps = 0
        self.proposer = proposer
        """Drafts for greedy decoders (speculative.py); None = plain decoding."""
        self.num_speculative_tokens = num_speculative_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        seq.arrival_step = self.num_steps
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence, reason: str) -> None:
        """Mark finished and free its blocks at once (also used for aborts)."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
        self.block_manager.deallocate(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        self.num_steps += 1
        budget, prefill_budget = self._schedule_running(out, self.max_num_batched_tokens, self.max_prefill_tokens)
        if not out.preempted:
            self._schedule_waiting(out, min(budget, prefill_budget))
        out.copies = self.block_manager.pending_copies
        self.block_manager.pending_copies = []
        return out

    def postprocess(self, out: SchedulerOutput) -> None:
        """After the forward: the chunks' real tokens now have KV; register newly full blocks for reuse.
        Drafts count only once accepted (`accept`)."""
        for chunk in out.chunks:
            if chunk.seq.is_finished:  # aborted while the forward ran: its blocks are already free
                continue
            chunk.seq.num_computed_tokens = chunk.start + chunk.num_new_tokens - len(chunk.draft_token_ids)
            self.block_manager.commit(chunk.seq)

    def accept(self, seq: Sequence, num_accepted: int) -> None:
        """After the engine appended a speculating step's emitted tokens: the first `num_accepted` drafts equal
        emitted tokens, so their KV is the sequence's own; the blocks reserved for the rejected rest are freed."""
        if seq.is_finished:  # stopped mid-acceptance (or aborted): its blocks are already free
            return
        seq.num_computed_tokens += num_accepted
        if seq.num_computed_tokens >= len(seq):
            raise RuntimeError(f"accepted {num_accepted} drafts but only {len(seq)} tokens are known")
        self.block_manager.commit(seq)
        self.block_manager.trim(seq)

    # -- internals -------------------------------------------------------------------------------------

    def _schedule_running(self, out: SchedulerOutput, budget: int, prefill_budget: int) -> tuple[int, int]:
        """Decoders first (one token each keeps inter-token latency low), then prefills already under way, each
        in arrival order -> (token budget left, prefill budget left)."""
        queue = deque(sorted(self.running, key=lambda s: (len(s) - s.num_computed_tokens > 1, s.arrival)))
        while queue and budget > 0:
            seq = queue.popleft()
            if len(seq) - seq.num_computed_tokens > 1 and prefill_budget <= 0:
                break  # only prefills are left in the queue, and this step's prefill budget is spent
            drafts = self._drafts(seq, budget)
            if drafts and not self.block_manager.can_append(seq, len(drafts)):
                drafts = []  # no room to guess: decode plainly rather than preempt someone for a guess
            while not self.block_manager.can_append(seq):
                victim = queue.pop() if queue else seq
                self._preempt(victim)
                out.preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is not SequenceStatus.RUNNING:
                break
            self.block_manager.may_append(seq, len(drafts))
            left = len(seq) - seq.num_computed_tokens
            n = (min(left, budget, prefill_budget) if left > 1 else 1) + len(drafts)
            out.chunks.append(ScheduledChunk(seq, seq.num_computed_tokens, n, tuple(drafts)))
            budget -= n
            prefill_budget -= n if left > 1 else 0
        return budget, prefill_budget

    def _drafts(self, seq: Sequence, budget: int) -> list[int]:
        """Drafts for a greedy sequence about to sample its next token, within the budget and its max_tokens
        (which also keeps them inside the context: add_request checks prompt + max_tokens against it)."""
        if self.proposer is None or len(seq) - seq.num_computed_tokens != 1 or not seq.params.greedy:
            return []
        k = min(self.num_speculative_tokens, budget - 1, seq.params.max_tokens - seq.num_output_tokens - 1)
        return self.proposer(seq.token_ids, k)[:k] if k > 0 else []

    def _schedule_waiting(self, out: SchedulerOutput, budget: int) -> None:
        """Admit waiting requests in `admission_order` while tokens, sequence slots and blocks last; one that
        does not fit blocks the ones after it (so a large request is not overtaken forever)."""
        for seq in self.admission_order():
            if budget <= 0 or len(self.running) >= self.max_num_seqs or not self.block_manager.can_allocate(seq):
                break
            self.block_manager.allocate(seq)
            self.waiting.remove(seq)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            n = min(len(seq) - seq.num_computed_tokens, budget)
            out.chunks.append(ScheduledChunk(seq, seq.num_computed_tokens, n))
            budget -= n

    def admission_order(self) -> list[Sequence]:
        """The waiting queue in the order requests are admitted. "arrival": as queued (FCFS; preempted requests
        first). "shortest": requests that have waited `max_wait_steps` steps or more first, oldest first, then the
        rest by fewest prompt tokens, so that a short prompt's first token is not stuck behind long prompts while
        no request is passed over for more than `max_wait_steps` steps."""
        if self.prefill_order == "arrival":
            return list(self.waiting)

        def key(seq: Sequence) -> tuple[int, int, int]:
            if self.num_steps - seq.arrival_step >= self.max_wait_steps:
                return (0, seq.arrival, 0)
            return (1, len(seq) - seq.num_computed_tokens, seq.arrival)

        return sorted(self.waiting, key=key)

    def _preempt(self, seq: Sequence) -> None:
        """Preempt by recompute: drop its KV, keep its tokens, put it first in line."""
        self.running.remove(seq)
        self.block_manager.deallocate(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)
