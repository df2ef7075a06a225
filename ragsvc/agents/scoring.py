"""The memory retrieval score of generative agents, as pure functions over arrays of candidates.

    score = w_rec · recency + w_imp · importance + w_rel · relevance

each of the three min-max normalised to [0, 1] over the candidates, so no term dominates by its units alone.
recency = decay ** (simulation hours since the memory was last accessed); importance is the 1-10 rating;
relevance is the cosine similarity of the memory's embedding to the query's.

Two sets of constants exist, and they disagree:

- the paper (Park et al. 2023, section 4.1): all weights 1 and decay 0.995 per game hour -> `PAPER_WEIGHTS`;
- the authors' reference code (retrieve.py): weights recency 0.5, relevance 3, importance 2, with hand-tuned
  alternatives left in comments, and decay 0.99 applied per *position* in the memories sorted by last access
  (oldest first) rather than per hour. `REFERENCE_CODE_WEIGHTS` takes its weights and decay; we keep the
  paper's hours-based recency, because a rank-based one scores an hour and a year apart alike.

Nothing here touches the store: callers fetch the candidates' columns, score them here, and then decide
explicitly which memories count as accessed (MemoryStream.retrieve does so as a separate step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ragsvc.errors import InvalidInput

PAPER_DECAY = 0.995


@dataclass(frozen=True, slots=True)
class RetrievalWeights:
    """Weights of the three normalised terms and the recency decay per simulation hour."""

    recency: float = 1.0
    importance: float = 1.0
    relevance: float = 1.0
    decay: float = PAPER_DECAY
    """Recency multiplier per hour since last access, in (0, 1]; 1 turns recency off (every memory equal)."""

    def __post_init__(self) -> None:
        for name in ("recency", "importance", "relevance"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise InvalidInput(f"retrieval weight {name} must be a finite number >= 0, got {value}")
        if self.recency + self.importance + self.relevance <= 0:
            raise InvalidInput("retrieval weights are all 0; give at least one of recency, importance, "
                               "relevance a positive weight (the paper uses 1, 1, 1)")
        if not (math.isfinite(self.decay) and 0 < self.decay <= 1):
            raise InvalidInput(f"recency decay must be in (0, 1] per hour (the paper uses 0.995), got {self.decay}")


PAPER_WEIGHTS = RetrievalWeights()
REFERENCE_CODE_WEIGHTS = RetrievalWeights(recency=0.5, importance=2.0, relevance=3.0, decay=0.99)


@dataclass(frozen=True, slots=True)
class ScoreParts:
    """Per-candidate normalised terms and the weighted total, aligned with the inputs."""

    recency: np.ndarray  # (n,) in [0, 1]
    importance: np.ndarray  # (n,) in [0, 1]
    relevance: np.ndarray  # (n,) in [0, 1]
    total: np.ndarray  # (n,)


def recency(last_accessed_h: np.ndarray, *, now_h: float, decay: float) -> np.ndarray:
    """decay ** (now_h - last_accessed_h), elementwise; refuses a clock that runs backwards."""
    last = np.asarray(last_accessed_h, dtype=np.float64)
    check_clock(now_h, latest_h=float(last.max()) if len(last) else 0.0)
    return np.power(decay, now_h - last)


def check_clock(now_h: float, *, latest_h: float) -> None:
    """`now_h` must be a simulation time no earlier than the latest access it is compared with."""
    if not math.isfinite(now_h) or now_h < 0:
        raise InvalidInput(f"now_h must be simulation hours >= 0, got {now_h}")
    if now_h < latest_h - 1e-9:
        raise InvalidInput(f"now_h {now_h} is before a memory's last access at {latest_h}; the simulation clock "
                           "must not run backwards: pass the current simulation time")


def min_max(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] over the candidates. All equal -> 0.5 each: the term then says nothing and shifts every
    score alike (the reference code does the same), where 0 or 1 would pretend it said something."""
    x = np.asarray(values, dtype=np.float64)
    if not len(x):
        return x
    low, high = float(x.min()), float(x.max())
    if high - low <= 1e-12:
        return np.full(len(x), 0.5)
    return (x - low) / (high - low)


def fill_pending(importance: np.ndarray) -> np.ndarray:
    """Importance with pending (NaN) entries set to the median of the scored ones, so a memory whose rating is
    not back yet is neither buried nor promoted; all pending -> all equal (the term is then neutral)."""
    x = np.asarray(importance, dtype=np.float64)
    pending = np.isnan(x)
    if not pending.any():
        return x
    fill = float(np.median(x[~pending])) if (~pending).any() else 5.0
    return np.where(pending, fill, x)


def score_candidates(*, relevance: np.ndarray, importance: np.ndarray, last_accessed_h: np.ndarray, now_h: float,
                     weights: RetrievalWeights = PAPER_WEIGHTS) -> ScoreParts:
    """The retrieval score of each candidate (arrays aligned by position; importance NaN = pending)."""
    n = len(relevance)
    if not len(importance) == len(last_accessed_h) == n:
        raise InvalidInput(f"candidate columns differ in length: relevance {n}, importance {len(importance)}, "
                           f"last_accessed_h {len(last_accessed_h)}")
    rec = min_max(recency(last_accessed_h, now_h=now_h, decay=weights.decay))
    imp = min_max(fill_pending(importance))
    rel = min_max(np.asarray(relevance, dtype=np.float64))
    total = weights.recency * rec + weights.importance * imp + weights.relevance * rel
    return ScoreParts(recency=rec, importance=imp, relevance=rel, total=total)


def top_k(total: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best scores, best first; ties keep input order (deterministic)."""
    if k < 1:
        raise InvalidInput(f"k must be at least 1, got {k}")
    order = np.argsort(-np.asarray(total, dtype=np.float64), kind="stable")
    return order[:k]
