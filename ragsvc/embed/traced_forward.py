"""The lean BERT forward as a TorchScript graph, so a pass runs without taking the GIL between operations.

Eager torch gives the GIL back during each operation and takes it again after. In a server whose request
threads run Python between their waits, every re-take can wait for a running thread to yield, and a MiniLM
pass is about a hundred operations: a one-query pass beside a Python loop took 1,012 ms eager and 37 ms
traced on a Zen 3 core (13-14 ms either way alone), and the search server left 0.40 of its 2 cores idle
while 32 clients queued (0.24 traced, and 133 searches/s against 98 in one session). A traced graph runs
all its operations in one call that releases the GIL, and two lanes then use both cores (2 threads: 1.98
cores traced, 1.82 eager).

Why TorchScript, which torch marks deprecated: its successor for running a graph from Python,
torch.export + AOTInductor, compiled the same forward (47 s) but its runner holds the GIL for the whole
pass, so two lanes ran on one core (measured: 23-26 passes/s with one thread or two). Tracing takes ~50 ms at
load and needs no compiler. Where tracing is unavailable or fails, or the traced graph disagrees with the
eager forward on the check sample, the eager lean forward runs, logged.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ragsvc.embed.lean_bert import Layout, layout_for

if TYPE_CHECKING:
    import torch

    from ragsvc.embed.lean_bert import LeanBert

logger = logging.getLogger(__name__)

CHECK_TOLERANCE = 1e-4
"""Largest element difference of normalised vectors from the eager forward's (float32 sums in another
order: ~1e-7)."""

Features = tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]
"""input_ids, attention_mask, token_type_ids of one batch, (batch, tokens) each."""


class TracedForward:
    """`(input_ids, attention_mask, token_type_ids) -> pooled` through a traced graph: the packed one for a
    batch `layout_for` packs, else the padded one (an all-ones mask computes the same as none); None for a
    batch of more tokens than the model has positions (the caller then runs eager, which raises as
    transformers does)."""

    def __init__(self, padded: Any, packed: Any, *, max_tokens: int, packed_weights: bool = False) -> None:
        self._padded = padded
        self._packed = packed
        self.max_tokens = max_tokens
        self.packed_weights = packed_weights
        """Whether the graphs' linears run on weights packed once for oneDNN (`packed_linear.py`)."""

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor) -> torch.Tensor | None:
        if not 1 <= input_ids.shape[1] <= self.max_tokens:
            return None
        graph = self._packed if layout_for(attention_mask) == "packed" else self._padded
        return graph(input_ids, attention_mask, token_type_ids)

    def difference(self, lean: LeanBert, features: Features) -> float:
        """Largest element difference of normalised vectors from `lean`'s eager forward on one batch, over
        every graph that may take it (a padded batch: both), each against the eager forward in its own layout.

        Each graph is held to the layout it was traced in because the two layouts are one function but not
        one computation: packing drops the padded rows, so its GEMMs have fewer rows, and a bfloat16 GEMM may
        then block or round differently. On a Xeon with AMX, MiniLM's padded and packed bfloat16 vectors of the
        same 9-text batch differed by 6.6e-4, while each graph matched its own layout's eager forward exactly;
        set against one layout, the padded graph was refused and the server ran the eager forward, whose
        GIL re-takes left 0.65 of its 2 cores idle under 32 clients. That the layouts agree is the lean
        check's business (`fast.with_lean`, on the model's own vectors)."""
        import torch

        if not 1 <= features[0].shape[1] <= self.max_tokens:
            raise ValueError(f"a check batch of shape {tuple(features[0].shape)} has more tokens than positions")
        layout = layout_for(features[1])
        normalise = torch.nn.functional.normalize
        # a batch without padding takes the padded graph too, which attends over aligned keys with a mask
        # (lean_bert.ATTENTION_ALIGN) where the eager dense layout attends over the tokens as given
        graphs: tuple[tuple[Any, Layout], ...] = ((self._padded, "padded"),) if layout == "dense" else (
            (self._padded, "padded"), (self._packed, "packed"))
        with torch.inference_mode():
            return max(float((normalise(graph(*features), dim=1)
                              - normalise(lean.encode(*features, layout=own), dim=1)).abs().max())
                       for graph, own in graphs)


PACKED_MIN_COSINE = 0.9999
"""Least cosine of each vector of the graph with packed weights to the plain eager forward's. The packed weight
is blocked for another kernel, whose sums may round to other bfloat16 values (MiniLM on an AMX core: up to
5e-4 per element, cosine >= 0.99999); a linear given the wrong weight falls far below."""


def trace(lean: LeanBert, check: Sequence[Features], *, pack_weights: bool = False) -> TracedForward | None:
    """`lean`'s forward traced in the padded and the packed layout, frozen and checked on `check`'s batches;
    None, logged, where any step fails. `pack_weights` (a bfloat16 forward on a CPU where the caller found it
    pays) traces it with its weights packed once for oneDNN (`packed_linear.py`) instead, held to the eager
    forward on the same packed weights and, within PACKED_MIN_COSINE, to the plain one; where packing is
    unavailable or fails those checks, the plain graph serves, logged (it is traced only then)."""
    import torch

    if pack_weights:
        packed, worst, why = _with_packed_weights(lean, check)
        if packed is not None:
            logger.info("embedder forward: traced (max |difference| %.1g from the eager forward on the same "
                        "weights); weights packed for oneDNN", worst)
            return packed
        logger.warning("embedder forward: weights not packed (%s); the plain traced graph runs", why)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice: see the module docstring
            traced = _traced(lean)
        worst = max((traced.difference(lean, features) for features in check), default=0.0)
    except Exception:  # noqa: BLE001 - no TorchScript, or a graph it cannot trace: the eager forward is correct
        logger.warning("embedder forward: tracing it failed; the eager lean forward runs", exc_info=True)
        return None
    if worst > CHECK_TOLERANCE:
        logger.warning("embedder forward: the traced forward differed by %.2g from the eager one (allowed %.0e); "
                       "the eager lean forward runs", worst, CHECK_TOLERANCE)
        return None
    logger.info("embedder forward: traced (max |difference| %.1g from the eager forward)", worst)
    return traced


def _traced(lean: LeanBert, modules: Any = None) -> TracedForward:
    """The padded- and packed-layout graphs of `lean` (call under `torch.inference_mode`). `modules`: the
    scripted linears `lean.linear` calls, registered on the traced module so the graph calls them."""
    import torch

    class Forward(torch.nn.Module):
        def __init__(self, layout: Layout) -> None:
            super().__init__()
            self.layout: Layout = layout
            self.linears = torch.nn.ModuleList() if modules is None else modules

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            return lean.encode(input_ids, attention_mask, token_type_ids, layout=self.layout)

    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    mask[1, 5:] = 0  # a padded row, so both graphs hold the masked attention

    def graph(layout: Layout) -> Any:
        return torch.jit.freeze(torch.jit.trace(Forward(layout).eval(), (ids, mask, torch.zeros_like(ids)),
                                                check_trace=False))

    return TracedForward(graph("padded"), graph("packed"), max_tokens=lean.max_positions,
                         packed_weights=modules is not None)


def _with_packed_weights(lean: LeanBert, check: Sequence[Features]) -> tuple[TracedForward | None, float, str]:
    """The graphs with `lean`'s weights packed and their largest difference from the eager forward on the same
    weights, where they pass the checks `trace` names; else None and why."""
    import copy

    import torch

    from ragsvc.embed import packed_linear

    why = packed_linear.unavailable_reason()
    if why is not None:
        return None, 0.0, why
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            modules, by_weight = packed_linear.packed_linears(lean)
            eager = copy.copy(lean)  # the same forward on the packed weights; `lean` itself stays plain
            eager.linear = lambda x, weight, bias: by_weight[id(weight)](x)
            eager.traced = None
            packed = _traced(eager, modules)
            worst = max((packed.difference(eager, features) for features in check), default=0.0)
            cosine = min((_least_cosine(packed, lean, features) for features in check), default=1.0)
    except Exception as exc:  # noqa: BLE001 - an operator this torch or CPU lacks: the plain graph is correct
        return None, 0.0, f"packing failed: {type(exc).__name__}: {exc}"
    if worst > CHECK_TOLERANCE:
        return None, worst, f"the graph differed by {worst:.2g} from the eager forward on the packed weights"
    if not cosine >= PACKED_MIN_COSINE:
        return None, worst, (f"its vectors reached cosine {cosine:.5f} to the plain forward's "
                             f"(needs {PACKED_MIN_COSINE})")
    return packed, worst, ""


def _least_cosine(graph: TracedForward, lean: LeanBert, features: Features) -> float:
    """Least cosine of `graph`'s vectors of one batch to `lean`'s eager forward's (call under inference mode)."""
    import torch

    pooled = graph(*features)
    if pooled is None:
        raise ValueError(f"a check batch of shape {tuple(features[0].shape)} has more tokens than positions")
    normalise = torch.nn.functional.normalize
    mine = normalise(pooled, dim=1)
    plain = normalise(lean.encode(*features, layout=layout_for(features[1])), dim=1)
    return float((mine * plain).sum(1).min())
