"""A BERT encoder's forward pass as a short run of torch calls, for the embedder's torch CPU path.

transformers' `BertModel` spends much of a small pass outside arithmetic: about 120 module calls, each
through hooks, output-capturing and deprecation wrappers, and three separate Q/K/V projections. For a query
of ~20 tokens that is a large share of the pass (MiniLM on one Zen 3 thread: 16.8 ms through transformers,
13.7 ms here; 4 queries 32.3 against 28.8 ms), and all of it holds the GIL, which a search server's ~30
request threads also want. `LeanBert` reads the same weights (Q, K and V concatenated once into one
projection) and computes the same function: embeddings + LayerNorm, then per layer fused-QKV attention
through `scaled_dot_product_attention`, the output projection, residual + LayerNorm, the GELU feed-forward,
residual + LayerNorm; then the sentence-transformers pooling (mean or CLS).

In bfloat16 (a CPU with bfloat16 instructions, where the precision check chose it) the linears and attention
run in bfloat16 from weights converted once (of a BERT pass, the operations torch's autocast lowers to it),
while the embeddings, residual stream and LayerNorms stay float32. Eager, that path is transformers' forward
under autocast, whose ~100 operations each re-take the GIL: a one-query MiniLM pass on a Zen 4 core took
8.6 ms alone through transformers in bfloat16 and 677 ms beside a Python busy-loop thread; lean and traced,
5.8 and 64 ms.

It takes only what it reproduces exactly: a `BertModel` with absolute positions and exact GELU, followed by
mean or CLS pooling (and an optional Normalize). `lean_encoder` returns None with the reason for anything
else, and the embedder checks its vectors against the model's own on a fixed sample before using it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import torch
    from sentence_transformers import SentenceTransformer

SUPPORTED_POOLING = ("mean", "cls")
LeanPrecision = Literal["float32", "bfloat16"]
"""What the linears and attention compute in (`LeanBert`)."""
LeanSetting = Literal["traced", "eager", "off"]
"""`EmbedSettings.lean_forward`: the lean forward traced (TorchScript) or eager, or transformers' own."""
Layout = Literal["dense", "padded", "packed"]
"""How a pass lays out its batch (`LeanBert.encode`)."""
PACK_MIN_PADDING = 1.15
"""A batch is packed when its padded layout holds at least this many times its real tokens. Packing adds a
gather and a scatter a layer, which cost more than they save on a batch padded little. MiniLM, two texts, one
Zen 3 core, four alternating runs: 1.03x padded, 19.4-22.3 ms padded against 21.5-24.0 packed; 1.17x,
24.8-28.1 against 25.0-25.2."""


ATTENTION_ALIGN = 16
"""The padded and packed layouts run attention over their token axis padded (with masked keys) to a multiple of
this. torch's CPU attention kernel is much slower at other lengths: one thread, 12 heads of 32, masked, on a
Xeon with AMX (torch 2.13), 4 texts of 44 tokens took 691 us in bfloat16 and 968 us in float32, and of 48
tokens 400 and 427 us; 4 of 13 took 299 / 351 against 16's 128 / 137. Over 60 such cells (1, 4 or 8 texts; 10
lengths of 9 to 99 tokens; both precisions) the aligned length was faster in 54 (up to 3.6x), equal in 1 and
slower in 5, all float32 (up to 1.45x). For MiniLM's whole traced bfloat16 pass there (SciFact texts,
each batch timed aligned and as given back to back, 120-360 pairs): 4 document chunks of 42 tokens 1.09x
faster (quartiles 1.07-1.13), 16 chunks 1.15x, 4 queries 1.06x, 1 query 1.02x; float32 1.00-1.04x. The
linears never see the pad: it is added to Q, K and V after their projection (padded layout, whose traced graph
batches without padding take too) or by the scatter before attention (packed). 1 turns it off."""


def aligned_tokens(tokens: int) -> int:
    """`tokens` rounded up to a multiple of ATTENTION_ALIGN (traced: the arithmetic follows the batch's size)."""
    return (tokens + ATTENTION_ALIGN - 1) // ATTENTION_ALIGN * ATTENTION_ALIGN


def layout_for(attention_mask: torch.Tensor) -> Layout:
    """"dense" for a batch without padding, else "packed" or "padded" by PACK_MIN_PADDING."""
    real = int(attention_mask.sum())
    total = attention_mask.numel()
    if real == total:
        return "dense"
    return "packed" if total >= PACK_MIN_PADDING * real else "padded"


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_weight: torch.Tensor  # (3 * hidden, hidden): Q, K and V rows stacked
    qkv_bias: torch.Tensor
    out_weight: torch.Tensor
    out_bias: torch.Tensor
    norm1_weight: torch.Tensor
    norm1_bias: torch.Tensor
    up_weight: torch.Tensor
    up_bias: torch.Tensor
    down_weight: torch.Tensor
    down_bias: torch.Tensor
    norm2_weight: torch.Tensor
    norm2_bias: torch.Tensor


class LeanBert:
    """The pooled (not yet normalised) sentence vectors of a sentence-transformers BERT model."""

    def __init__(self, weights: Mapping[str, torch.Tensor], *, heads: int, eps: float, pooling: str,
                 precision: LeanPrecision = "float32") -> None:
        """`weights`: a BertModel's state dict (names as in its safetensors file, `embeddings.*` and
        `encoder.layer.N.*`), on the CPU; `pooling`: "mean" or "cls"; `precision`: what the linears and
        attention compute in (the rest is float32 either way)."""
        import torch

        from ragsvc.gemm_rows import bucketed_linear

        def w(name: str) -> torch.Tensor:
            return weights[name].detach().float().contiguous()

        def lw(name: str) -> torch.Tensor:  # a linear's weight or bias, in the compute precision
            return w(name).to(self._dtype).contiguous()

        self.precision: LeanPrecision = precision
        self._dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32

        self.word = w("embeddings.word_embeddings.weight")
        self.position = w("embeddings.position_embeddings.weight")
        self.token_type = w("embeddings.token_type_embeddings.weight")
        self.norm_weight = w("embeddings.LayerNorm.weight")
        self.norm_bias = w("embeddings.LayerNorm.bias")
        self.heads = heads
        self.hidden = int(self.word.shape[1])
        self.eps = eps
        self.max_positions = int(self.position.shape[0])
        self.pooling = pooling
        self.linear: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] = (
            bucketed_linear if precision == "bfloat16" else torch.nn.functional.linear)
        """How a layer's linear is computed from (input, weight, bias): torch's own, in bfloat16 over rows rounded
        up so that oneDNN reuses its kernels (`gemm_rows`; float32 goes to a BLAS that builds none); the copy
        traced with packed weights (`traced_forward._with_packed_weights`) calls those instead."""
        self.traced: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor | None] | None = None
        """The same forward as a TorchScript graph (`traced_forward.TracedForward`), once checked: it runs the
        passes it takes (it returns None for the others)."""
        self.layers = []
        count = len({name.split(".")[2] for name in weights if name.startswith("encoder.layer.")})
        for i in range(count):
            at = f"encoder.layer.{i}."
            self.layers.append(_Layer(
                qkv_weight=torch.cat([lw(at + f"attention.self.{p}.weight") for p in ("query", "key", "value")]),
                qkv_bias=torch.cat([lw(at + f"attention.self.{p}.bias") for p in ("query", "key", "value")]),
                out_weight=lw(at + "attention.output.dense.weight"), out_bias=lw(at + "attention.output.dense.bias"),
                norm1_weight=w(at + "attention.output.LayerNorm.weight"),
                norm1_bias=w(at + "attention.output.LayerNorm.bias"),
                up_weight=lw(at + "intermediate.dense.weight"), up_bias=lw(at + "intermediate.dense.bias"),
                down_weight=lw(at + "output.dense.weight"), down_bias=lw(at + "output.dense.bias"),
                norm2_weight=w(at + "output.LayerNorm.weight"), norm2_bias=w(at + "output.LayerNorm.bias"),
            ))

    @classmethod
    def from_module(cls, bert: Any, pooling: str, precision: LeanPrecision = "float32") -> LeanBert:
        """From a transformers BertModel in eval mode (`unsupported_reason` says which qualify)."""
        config = bert.config
        return cls(bert.state_dict(), heads=int(config.num_attention_heads), eps=float(config.layer_norm_eps),
                   pooling=pooling, precision=precision)

    def _low(self, x: torch.Tensor) -> torch.Tensor:
        """`x` in the compute precision (float32: `x` itself, so that graph is unchanged)."""
        return x if self.precision == "float32" else x.to(self._dtype)

    def _high(self, x: torch.Tensor) -> torch.Tensor:
        """`x` back in float32 for the residual stream."""
        return x if self.precision == "float32" else x.float()

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, hidden) float32 pooled vectors of (batch, tokens) ids; call under `torch.inference_mode`."""
        traced = self.traced
        if traced is not None:
            import torch

            types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
            pooled = traced(input_ids, attention_mask, types)
            if pooled is not None:
                return pooled
        return self.encode(input_ids, attention_mask, token_type_ids, layout=layout_for(attention_mask))

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None,
               *, layout: Layout) -> torch.Tensor:
        """`__call__` in the layout the caller chose (a traced graph is traced in one): "dense" for a batch
        without padding (no attention mask), "padded" (padded keys masked) or "packed" (`_packed`)."""
        import torch.nn.functional as F  # noqa: N812 - torch's own convention

        tokens = input_ids.shape[1]
        types = self.token_type[0] if token_type_ids is None else F.embedding(token_type_ids, self.token_type)
        x = F.embedding(input_ids, self.word) + self.position[:tokens] + types
        if layout == "packed":
            return self._packed(x, attention_mask)
        x = F.layer_norm(x, (self.hidden,), self.norm_weight, self.norm_bias, self.eps)
        batch, hidden, heads = x.shape[0], self.hidden, self.heads
        # padded: attention over ATTENTION_ALIGN-aligned keys, the added ones masked; dense: no mask, as given
        keys = aligned_tokens(tokens) if layout == "padded" else tokens
        mask = F.pad(attention_mask, (0, keys - tokens)).bool()[:, None, None, :] if layout == "padded" else None
        for layer in self.layers:
            qkv = self.linear(self._low(x), layer.qkv_weight, layer.qkv_bias)
            if layout == "padded":
                qkv = F.pad(qkv, (0, 0, 0, keys - tokens))
            qkv = qkv.view(batch, keys, 3, heads, hidden // heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, keys, head_dim)
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)[:, :tokens]
            x = self._feed_forward(layer, attended.reshape(batch, tokens, hidden), x)
        return self._pool(x, attention_mask)

    def _packed(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The layers on (batch, tokens, hidden) embeddings, packed: the linears, layer norms and GELU (nearly
        all of a pass's arithmetic) run on the real tokens only, and only attention sees the padded layout.
        A padded position's row never enters a real token's vector (its key is masked, and nothing else mixes
        positions), so skipping it changes no result, and a batch of unequal texts stops paying for its padding
        (SciFact's queries, 16 to a batch sorted by length: 1.48x their tokens padded; 245 -> 174 ms a
        pass on one Zen 3 core)."""
        import torch
        import torch.nn.functional as F  # noqa: N812 - torch's own convention

        batch, tokens, hidden = x.shape
        heads = self.heads
        keys = aligned_tokens(tokens)  # attention's token axis (ATTENTION_ALIGN)
        real = attention_mask.reshape(-1).nonzero().squeeze(1)  # (real tokens,): positions in the flat batch
        key_mask = F.pad(attention_mask, (0, keys - tokens))  # (batch, keys)
        slots = key_mask.reshape(-1).nonzero().squeeze(1)  # the same tokens' positions in the aligned batch
        x = F.layer_norm(x.reshape(-1, hidden).index_select(0, real), (hidden,), self.norm_weight, self.norm_bias,
                         self.eps)  # (real tokens, hidden)
        mask = key_mask.bool()[:, None, None, :]

        def padded(rows: torch.Tensor) -> torch.Tensor:  # (real tokens, n) -> (batch, keys, n), zeros at pads
            return rows.new_zeros(batch * keys, rows.shape[1]).index_copy(0, slots, rows).view(batch, keys, -1)

        for layer in self.layers:
            qkv = padded(self.linear(self._low(x), layer.qkv_weight, layer.qkv_bias)).view(batch, keys, 3, heads,
                                                                                         hidden // heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, keys, head_dim)
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            attended = attended.transpose(1, 2).reshape(batch * keys, hidden).index_select(0, slots)
            x = self._feed_forward(layer, attended, x)
        if self.pooling == "cls":
            return padded(x)[:, 0]
        sums = x.new_zeros(batch, hidden).index_add(0, torch.div(real, tokens, rounding_mode="floor"), x)
        return sums / torch.clamp(attention_mask.sum(1, keepdim=True).to(x.dtype), min=1e-9)

    def _pool(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """sentence-transformers' pooling of (batch, tokens, hidden) outputs: the first token's, or the mean
        over the real tokens."""
        import torch

        if self.pooling == "cls":
            return x[:, 0]
        weights = attention_mask.unsqueeze(-1).to(x.dtype)
        return (x * weights).sum(1) / torch.clamp(weights.sum(1), min=1e-9)

    def _feed_forward(self, layer: _Layer, attended: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The rest of a layer after attention: output projection, residual + LayerNorm, the GELU feed-forward,
        residual + LayerNorm (row by row, so packed and padded rows alike)."""
        import torch.nn.functional as F  # noqa: N812 - torch's own convention

        hidden = (self.hidden,)
        x = F.layer_norm(self._high(self.linear(attended, layer.out_weight, layer.out_bias)) + x, hidden,
                         layer.norm1_weight, layer.norm1_bias, self.eps)
        up = F.gelu(self.linear(self._low(x), layer.up_weight, layer.up_bias))
        return F.layer_norm(self._high(self.linear(up, layer.down_weight, layer.down_bias)) + x, hidden,
                            layer.norm2_weight, layer.norm2_bias, self.eps)


def unsupported_reason(model: SentenceTransformer) -> str | None:
    """Why `LeanBert` cannot stand in for `model`'s forward pass (None: it can)."""
    modules = list(model)
    names = [type(m).__name__ for m in modules]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return f"its modules are {names}, not Transformer, Pooling[, Normalize]"
    bert = getattr(modules[0], "auto_model", None)
    config = getattr(bert, "config", None)
    if bert is None or config is None or type(bert).__name__ != "BertModel":
        return f"its transformer is {type(bert).__name__}, not a BertModel"
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return f"its positions are {config.position_embedding_type!r}, not absolute"
    if getattr(config, "hidden_act", None) != "gelu":
        return f"its activation is {getattr(config, 'hidden_act', None)!r}, not exact gelu"
    if bert.training:
        return "its transformer is in training mode (dropout)"
    pooling = modules[1]
    if getattr(pooling, "pooling_mode", None) not in SUPPORTED_POOLING or not getattr(pooling, "include_prompt", True):
        return f"its pooling is {getattr(pooling, 'pooling_mode', None)!r}, not one of {SUPPORTED_POOLING}"
    if model.device.type != "cpu":
        return f"it runs on {model.device.type}, and this path is for CPUs"
    return None


def lean_encoder(model: SentenceTransformer,
                 precision: LeanPrecision = "float32") -> tuple[LeanBert | None, str]:
    """`LeanBert` for `model` in `precision` and why, or None and why not."""
    reason = unsupported_reason(model)
    if reason is not None:
        return None, reason
    return (LeanBert.from_module(model[0].auto_model, str(model[1].pooling_mode), precision),
            "a BertModel with mean or CLS pooling")
