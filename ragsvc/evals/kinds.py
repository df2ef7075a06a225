"""The registry of config kinds: `index` (index structures over one collection per config), `pipeline`
(the retrieval pipeline's stages: lexical, hybrid fusion, HyDE, rerank) and `bm25-fields` (BM25 with a
field per index, the layout of published BEIR BM25 figures). Answer strategies (none, single,
FLARE) are the suite's [answer] section, not a kind: they consume a config's retrieval."""

from __future__ import annotations

from ragsvc.evals.configs import ConfigKind
from ragsvc.evals.fields_config import FieldsKind
from ragsvc.evals.index_config import IndexKind
from ragsvc.evals.pipeline_retriever import PipelineKind

# Kinds are stateless parsers/builders, so one instance each is enough; the dict is mutable only through
# `register_kind`, which later stages call from their own module.
_KINDS: dict[str, ConfigKind] = {"index": IndexKind(), "pipeline": PipelineKind(), "bm25-fields": FieldsKind()}


def register_kind(kind: ConfigKind, *, replace: bool = False) -> None:
    if kind.name in _KINDS and not replace:
        raise ValueError(f"config kind {kind.name!r} is already registered; pass replace=True to override it")
    _KINDS[kind.name] = kind


def config_kind(name: str) -> ConfigKind | None:
    return _KINDS.get(name)


def known_kinds() -> list[str]:
    return sorted(_KINDS)
