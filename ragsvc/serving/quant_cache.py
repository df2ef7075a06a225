"""The on-disk cache of quantised weights, so a model is quantised once per format, not at every start.

One safetensors file per (checkpoint, format) under the engine's cache folder, named after the checkpoint
folder, a fingerprint of its safetensors files (names, sizes, modification times: a changed checkpoint gets a
new file instead of stale weights) and the format version. Each linear's tensors are `<module>.data`,
`.scale` and `.offset`; the metadata records each one's format and shape. Written under a temporary name and
renamed, as the de-quantised GGUF cache is, so a killed start never leaves half a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from ragsvc.serving.layers.quant import QuantWeight, quantise

logger = logging.getLogger(__name__)

QUANT_FORMAT = "q2"
"""Bump when the packed layout changes (quant.py / cpu_quant.cpp), so old files are never misread."""


def _fingerprint(model_dir: Path) -> str:
    parts = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(model_dir.glob("*.safetensors"))]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


def cache_file(model_dir: Path, fmt: str, cache_root: Path) -> Path:
    return cache_root / f"{model_dir.name}-{_fingerprint(model_dir)}-{fmt}-{QUANT_FORMAT}.safetensors"


class QuantCache:
    """A quantiser for `quant_linear.quantise_linears` that reads the cache file and records what it lacked
    (and which format each linear was given); `save()` writes the file when anything changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stored: dict[str, QuantWeight] = {}
        self._new = False
        if path.exists():
            self._stored = _read(path)
            logger.info("read %d quantised linears from %s", len(self._stored), path.name)

    def __call__(self, name: str, weight: torch.Tensor, fmt: str) -> QuantWeight:
        key = f"{name}:{fmt}"
        cached = self._stored.get(key)
        if cached is not None and (cached.out_features, cached.in_features) == tuple(weight.shape):
            return cached
        qw = quantise(weight, fmt)
        self._stored[key] = qw
        self._new = True
        return qw

    def format_of(self, name: str) -> str | None:
        """The format the cache holds `name` in, when it holds it in exactly one."""
        held = [fmt for fmt in ("q4", "int8") if f"{name}:{fmt}" in self._stored]
        return held[0] if len(held) == 1 else None

    def forget(self, name: str, fmt: str) -> None:
        if self._stored.pop(f"{name}:{fmt}", None) is not None:
            self._new = True

    def save(self) -> None:
        if not self._new:
            return
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, list[object]] = {}
        for key, qw in self._stored.items():
            tensors[f"{key}.data"], tensors[f"{key}.scale"] = qw.data.cpu(), qw.scale.cpu()
            if qw.offset is not None:
                tensors[f"{key}.offset"] = qw.offset.cpu()
            meta[key] = [qw.fmt, qw.out_features, qw.in_features]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            save_file(tensors, str(tmp), metadata={"linears": json.dumps(meta)})
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        self._new = False
        logger.info("cached %d quantised linears in %s", len(meta), self.path)


def _read(path: Path) -> dict[str, QuantWeight]:
    from safetensors import safe_open

    out: dict[str, QuantWeight] = {}
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("linears", "{}"))
        names = set(f.keys())  # noqa: SIM118 - safe_open has keys() but cannot be iterated
        for key, (fmt, out_features, in_features) in meta.items():
            offset = f.get_tensor(f"{key}.offset") if f"{key}.offset" in names else None
            out[key] = QuantWeight(fmt, int(out_features), int(in_features), f.get_tensor(f"{key}.data"),
                                   f.get_tensor(f"{key}.scale"), offset)
    return out
