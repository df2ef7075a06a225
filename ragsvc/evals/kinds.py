"""The registry of config kinds. `index` ships now; hybrid, HyDE, rerank and FLARE register here later."""

from __future__ import annotations

from ragsvc.evals.configs import ConfigKind
from ragsvc.evals.index_config import IndexKind

# Kinds are stateless parsers/builders, so one instance each is enough; the dict is mutable only through
# `register_kind`, which later stages call from their own module.
_KINDS: dict[str, ConfigKind] = {"index": IndexKind()}


def register_kind(kind: ConfigKind, *, replace: bool = False) -> None:
    if kind.name in _KINDS and not replace:
        raise ValueError(f"config kind {kind.name!r} is already registered; pass replace=True to override it")
    _KINDS[kind.name] = kind


def config_kind(name: str) -> ConfigKind | None:
    return _KINDS.get(name)


def known_kinds() -> list[str]:
    return sorted(_KINDS)
