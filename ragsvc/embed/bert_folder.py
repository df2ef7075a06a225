"""A sentence-transformers BERT folder loaded without sentence-transformers or transformers.

Importing those two libraries takes longer than everything else in a `ragsvc serve` start (about 8 s of a
15 s start on a 2-core Zen 3, with torch already loaded), and a server restarted after a crash or an upgrade
is down for all of it. The lean forward (`lean_bert.py`) already computes the model's function from its
weights alone; what else a forward needs is the tokenizer, which the `tokenizers` library reads from the
folder's `tokenizer.json` (the same Rust tokenizer transformers wraps), and a few numbers from its JSON files.

`BertFolderModel` offers what `fast.encode` asks of a SentenceTransformer: `preprocess`, `token_counts`,
`device`, `max_seq_length` and the pooled vectors. It is used only after it agreed with the model loaded the
ordinary way (the same token ids, masks and types, and vectors within the lean tolerance, on the check
sample; `fast.with_lean` checks and records that per machine). `read_spec` refuses anything it does not
reproduce: other module stacks or architectures, a `do_lower_case` that sentence-transformers applies itself,
prompts, pooling other than mean or CLS, or weights that are not one safetensors file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragsvc.embed.lean_bert import LeanBert, LeanPrecision

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

WEIGHTS_FILE = "model.safetensors"
_POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}
_MODULES = {
    ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling"),
    ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
     "sentence_transformers.models.Normalize"),
}


@dataclass(frozen=True, slots=True)
class FolderSpec:
    """What the folder's JSON files say, as far as the lean forward needs it."""

    pooling: str
    max_seq_length: int
    heads: int
    eps: float
    pad_token: str


def folder_files(folder: Path) -> list[Path]:
    """The files `read_spec` and `BertFolderModel` read, those present, in a fixed order."""
    names = ["modules.json", "config.json", "sentence_bert_config.json", "config_sentence_transformers.json",
             "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", WEIGHTS_FILE]
    modules = _json(folder / "modules.json")
    if isinstance(modules, list) and len(modules) > 1 and isinstance(modules[1], dict):
        names.append(f"{modules[1].get('path', '')}/config.json")
    return [folder / name for name in names if (folder / name).is_file()]


def _json(path: Path) -> Any:
    """The file's JSON; None when it is missing or unreadable (the folder is then refused or loaded the
    ordinary way, whose error messages say more)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_spec(folder: Path) -> tuple[FolderSpec | None, str]:
    """The folder's spec, or None and why this loader does not take it."""
    modules = _json(folder / "modules.json")
    if not isinstance(modules, list) or tuple(m.get("type") for m in modules) not in _MODULES:
        return None, "modules.json is not Transformer, Pooling[, Normalize]"
    if modules[0].get("path") != "" or not all((folder / name).is_file() for name in (WEIGHTS_FILE, "tokenizer.json")):
        return None, f"the transformer is not {WEIGHTS_FILE} and tokenizer.json at the folder's top"
    config = _json(folder / "config.json") or {}
    if config.get("model_type") != "bert":
        return None, f"its model_type is {config.get('model_type')!r}, not 'bert'"
    if config.get("position_embedding_type", "absolute") != "absolute" or config.get("hidden_act") != "gelu":
        return None, "its positions are not absolute or its activation not exact gelu"
    st_config = _json(folder / "sentence_bert_config.json") or {}
    if st_config.get("do_lower_case"):
        return None, "sentence-transformers lowercases its input (do_lower_case)"
    prompts = _json(folder / "config_sentence_transformers.json") or {}
    if prompts.get("prompts") or prompts.get("default_prompt_name"):
        return None, "it declares prompts"
    pooling_config = _json(folder / str(modules[1].get("path", "")) / "config.json") or {}
    modes = [k for k, v in pooling_config.items() if k.startswith("pooling_mode_") and v]
    if len(modes) != 1 or modes[0] not in _POOLING or pooling_config.get("include_prompt", True) is not True:
        return None, f"its pooling is {modes}, not exactly one of mean or CLS"
    tokenizer_config = _json(folder / "tokenizer_config.json") or {}
    special = _json(folder / "special_tokens_map.json") or {}
    pad = tokenizer_config.get("pad_token") or special.get("pad_token")
    pad = pad.get("content") if isinstance(pad, dict) else pad
    if not isinstance(pad, str):
        return None, "it names no padding token"
    positions = int(config.get("max_position_embeddings", 512))
    length = st_config.get("max_seq_length") or tokenizer_config.get("model_max_length") or positions
    return FolderSpec(pooling=_POOLING[modes[0]], max_seq_length=min(int(length), positions),
                      heads=int(config["num_attention_heads"]), eps=float(config.get("layer_norm_eps", 1e-12)),
                      pad_token=pad), "a BERT folder"


class BertFolderModel:
    """The folder's tokenizer and lean forward, standing in for a SentenceTransformer in `fast.encode`."""

    def __init__(self, folder: Path, spec: FolderSpec, precision: LeanPrecision = "float32") -> None:
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        self.folder = folder
        self.max_seq_length = spec.max_seq_length
        self.device = torch.device("cpu")
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        pad_id = self._tokenizer.token_to_id(spec.pad_token)
        if pad_id is None:
            raise ValueError(f"{folder / 'tokenizer.json'} has no token {spec.pad_token!r} to pad with")
        self._tokenizer.enable_truncation(max_length=spec.max_seq_length, strategy="longest_first")
        self._tokenizer.enable_padding(pad_id=pad_id, pad_token=spec.pad_token, pad_type_id=0, direction="right")
        weights = {k.removeprefix("bert."): v for k, v in load_file(str(folder / WEIGHTS_FILE)).items()}
        self.lean = LeanBert(weights, heads=spec.heads, eps=spec.eps, pooling=spec.pooling, precision=precision)

    def get_embedding_dimension(self) -> int:
        return self.lean.hidden

    def preprocess(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids, attention mask and token types of `texts`, padded to the longest and truncated to
        `max_seq_length`, as sentence-transformers' `preprocess` gives them for a BERT folder."""
        import torch

        encoded = self._tokenizer.encode_batch(list(texts))
        return {"input_ids": torch.tensor([e.ids for e in encoded], dtype=torch.long),
                "token_type_ids": torch.tensor([e.type_ids for e in encoded], dtype=torch.long),
                "attention_mask": torch.tensor([e.attention_mask for e in encoded], dtype=torch.long)}

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text becomes in the model's input, special tokens in, truncated: the padded encoding's
        mask (a second tokenizer without padding would cost another parse of tokenizer.json, ~46 ms)."""
        return [sum(e.attention_mask) for e in self._tokenizer.encode_batch(list(texts))]

    def counter(self) -> Tokenizer:
        """A private tokenizer that neither pads nor truncates, for counting tokens and their offsets."""
        from tokenizers import Tokenizer

        own = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        own.no_padding()
        own.no_truncation()
        return own

    def __call__(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The pooled vectors, not normalised: `fast._forward` normalises every path's output."""
        pooled = self.lean(features["input_ids"], features["attention_mask"], features.get("token_type_ids"))
        return {"sentence_embedding": pooled}
