"""Sampler: next tokens from logits under each request's SamplingParams, plus logprobs.

Logprobs are log_softmax of the raw logits (before temperature / top-k / top-p), i.e. the model's own
distribution: a FLARE threshold then means the same thing whatever sampling settings a caller used.
Rows are grouped so the common cases (all greedy, one shared temperature) cost a few batched ops;
a request with a seed draws from its own torch.Generator so its samples do not depend on its batch mates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ragsvc.serving.layers import cpu_fused
from ragsvc.serving.sampling_params import SamplingParams


@dataclass
class SampledToken:
    token_id: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None


def sample(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> list[SampledToken]:
    """logits: (rows, vocab) in float32 or the model's dtype -> one SampledToken per row.

    Greedy rows take the argmax of the logits as they are (exact in any dtype); random sampling and logprobs
    work on a float32 copy, made only when some row needs it. Logits on a GPU stay there for greedy tokens and
    logprobs (only the chosen ids and the asked-for logprobs are copied back); a batch with a sampled row is
    copied to the CPU first, where the per-request generators are."""
    if logits.device.type != "cpu" and not all(p.greedy for p in params):
        logits = logits.cpu()
    chosen = torch.empty(logits.shape[0], dtype=torch.long)
    greedy = [i for i, p in enumerate(params) if p.greedy]
    random = [i for i, p in enumerate(params) if not p.greedy]
    if len(greedy) == len(params):
        chosen = _argmax(logits)  # the common all-greedy batch: no row gathering
    elif greedy:
        chosen[greedy] = _argmax(logits[greedy])
    want = [i for i, p in enumerate(params) if p.logprobs is not None]
    if random or want:
        logits = logits.float()
    if random:
        chosen[random] = _sample_random(logits[random], [params[i] for i in random], [generators[i] for i in random])
    out = [SampledToken(int(t)) for t in chosen.tolist()]
    if want:
        _attach_logprobs(logits[want], chosen[want], [params[i] for i in want], [out[i] for i in want])
    return out


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    if logits.device.type == "cpu" and cpu_fused.supports(logits):
        lib = cpu_fused.load()
        picked = cpu_fused.argmax(lib, logits) if lib is not None else None
        if picked is not None:
            return picked
    # max().indices is ~3x faster than argmax() on CPU for (rows, 49k) float32 here; same first-max tie rule.
    return logits.max(dim=-1).indices


def _sample_random(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> torch.Tensor:
    """logits: (rows, vocab) -> (rows,) sampled token ids.

    Sampling is by inverse CDF (one uniform per row, cumulative sum, binary search) rather than
    torch.multinomial, which was ~15x slower here for 32 rows of a 49k vocabulary.
    """
    temps = torch.tensor([p.temperature for p in params], dtype=torch.float32).unsqueeze(1)  # (rows, 1)
    probs = torch.softmax(logits / temps, dim=-1)  # (rows, vocab)
    uniforms = _uniforms(generators)  # (rows,)
    picks = torch.empty(len(params), dtype=torch.long)
    filtered = [i for i, p in enumerate(params) if p.top_k > 0 or p.top_p < 1.0]
    plain = [i for i in range(len(params)) if i not in set(filtered)]
    if plain:
        picks[plain] = _inverse_cdf(probs[plain], uniforms[plain])
    if filtered:
        candidates, ids = _nucleus(probs[filtered], [params[i] for i in filtered])  # (rows, k) each
        chosen = _inverse_cdf(candidates, uniforms[filtered])
        picks[filtered] = ids.gather(1, chosen.unsqueeze(1)).squeeze(1)
    return picks


def _uniforms(generators: list[torch.Generator | None]) -> torch.Tensor:
    """One U[0, 1) per row; a seeded row draws from its own generator so its batch does not matter."""
    out = torch.rand(len(generators))
    for i, g in enumerate(generators):
        if g is not None:
            out[i] = torch.rand(1, generator=g)[0]
    return out


def _inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """probs: (rows, n) unnormalised weights; uniforms: (rows,) -> (rows,) column indices."""
    cdf = probs.cumsum(dim=-1)  # (rows, n)
    targets = (uniforms * cdf[:, -1]).unsqueeze(1)  # (rows, 1)
    # side="right" skips zero-weight columns (their cdf equals their predecessor's).
    return torch.searchsorted(cdf, targets, side="right").squeeze(1).clamp_(max=probs.shape[1] - 1)


# Candidates kept for top-k / top-p. Exact: a row whose top-p mass is not reached within them is re-done
# with a full sort (rare with real models, and it keeps the common case from sorting 49k entries per row).
_NUCLEUS_CANDIDATES = 256


def _nucleus(probs: torch.Tensor, params: list[SamplingParams]) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, vocab) probs -> top-k / top-p filtered candidate weights (rows, k) and their token ids."""
    vocab = probs.shape[-1]
    k = min(vocab, max(_NUCLEUS_CANDIDATES, max(p.top_k for p in params)))
    values, ids = _first_ids_first(*probs.topk(k, dim=-1))  # (rows, k), descending
    top_ps = torch.tensor([p.top_p for p in params]).unsqueeze(1)  # (rows, 1)
    short = (values.sum(dim=-1, keepdim=True) < top_ps).squeeze(1) & torch.tensor([p.top_k == 0 for p in params])
    if bool(short.any()) and k < vocab:
        values, ids = probs.sort(dim=-1, descending=True, stable=True)  # some nucleus is wider than k: exact
    ks = torch.tensor([p.top_k if p.top_k > 0 else values.shape[1] for p in params]).unsqueeze(1)
    ranks = torch.arange(values.shape[1]).unsqueeze(0)  # (1, k)
    values = values.masked_fill(ranks >= ks, 0.0)
    # top-p over the (top-k) renormalised distribution: keep the smallest prefix reaching top_p.
    values = values / values.sum(dim=-1, keepdim=True)
    mass_before = values.cumsum(dim=-1) - values
    return values.masked_fill(mass_before >= top_ps, 0.0), ids


def _first_ids_first(values: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """topk's (rows, k) values and ids with equal values ordered by id. topk leaves ties in any order, and ties
    are common (bf16 logits hold 8 significant bits), so top_k=1 could pick another token than greedy's argmax
    (the first maximum); in id order it picks the same one."""
    by_id = ids.argsort(dim=-1)
    values, ids = values.gather(1, by_id), ids.gather(1, by_id)
    by_value = values.argsort(dim=-1, descending=True, stable=True)
    return values.gather(1, by_value), ids.gather(1, by_value)


def _attach_logprobs(
    logits: torch.Tensor, chosen: torch.Tensor, params: list[SamplingParams], out: list[SampledToken]
) -> None:
    logprobs = torch.log_softmax(logits, dim=-1)  # (rows, vocab)
    chosen_lp = logprobs.gather(1, chosen.unsqueeze(1)).squeeze(1).tolist()
    max_n = max(p.logprobs or 0 for p in params)
    top_vals, top_ids = logprobs.topk(max_n, dim=-1) if max_n else (None, None)
    for row, (p, tok) in enumerate(zip(params, out, strict=True)):
        tok.logprob = chosen_lp[row]
        n = p.logprobs or 0
        if n and top_vals is not None and top_ids is not None:
            tok.top = list(zip(top_ids[row, :n].tolist(), top_vals[row, :n].tolist(), strict=True))
        else:
            tok.top = []
