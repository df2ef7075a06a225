"""Evaluation suites: a TOML file -> a typed, frozen `Suite`. Every mistake names the file and the line.

    name = "scifact"
    [dataset]     path (relative to this file), format = "beir", split, max_queries
    [retrieval]   metrics, depth, chunking ("document" | "tokens"), chunk_tokens, chunk_overlap, baseline, ...
    [answer]      optional QA stage (needs a generator): qa_file, top_k, max_examples, config
    [references]  published numbers shown beside ours: label = nDCG@10
    [[configs]]   one table per config; `kind` picks the schema from the registry in `configs.py`

Python's tomllib reports no positions for keys, so `TomlLocator` scans the text once and maps each
(table path, key) to its line; errors found after parsing still point at the right line.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ragsvc.errors import InvalidInput
from ragsvc.evals.configs import EvalConfig
from ragsvc.evals.kinds import config_kind, known_kinds
from ragsvc.evals.metrics import parse_metric

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)\s*=""")
_SUITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,19}$")  # collection names are <= 64 chars


class TomlLocator:
    """Line numbers of table headers and keys, addressed like ("configs", 2, "backend")."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self._lines: dict[tuple[Any, ...], int] = {}
        counts: dict[str, int] = {}
        table: tuple[Any, ...] = ()
        for line_no, line in enumerate(text.splitlines(), start=1):
            header = _HEADER.match(line)
            if header:
                name = header.group(2).strip()
                if header.group(1) == "[[":
                    counts[name] = counts.get(name, -1) + 1
                    table = (name, counts[name])
                else:
                    table = tuple(name.split("."))
                self._lines.setdefault(table, line_no)
                continue
            key = _KEY.match(line)
            if key:
                self._lines.setdefault((*table, key.group(1).strip("\"'")), line_no)

    def line(self, *loc: Any) -> int | None:
        """Line of the key at `loc`, else of the nearest enclosing table that has one."""
        for end in range(len(loc), 0, -1):
            if loc[:end] in self._lines:
                return self._lines[loc[:end]]
        return None

    def where(self, *loc: Any) -> str:
        line = self.line(*loc)
        return f"{self.path}:{line}" if line is not None else str(self.path)

    def error(self, message: str, *loc: Any) -> InvalidInput:
        return InvalidInput(f"{self.where(*loc)}: {message}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSection(_Section):
    path: str
    """BEIR folder, relative to the suite file (or absolute)."""
    format: Literal["beir"] = "beir"
    split: str = "test"
    max_queries: int | None = Field(default=None, ge=1)
    """Evaluate only the first N judged queries (file order), for quick runs."""


class RetrievalSection(_Section):
    metrics: tuple[str, ...] = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
    depth: int = Field(default=100, ge=1)
    """Documents kept per query (at least the largest metric cut-off)."""
    chunking: Literal["document", "tokens"] = "document"
    """document: one chunk per document (title + text, truncated by the model, as BEIR embeds it);
    tokens: the store's token-aware chunker, and a document scores as its best chunk."""
    chunk_tokens: int = Field(default=200, ge=8)
    chunk_overlap: int = Field(default=32, ge=0)
    oversample: int = Field(default=3, ge=1)
    """With token chunking, chunks fetched per wanted document, since several chunks can share a document."""
    ignore_identical_ids: bool = True
    """Drop a hit whose document id equals the query id (BEIR's default, for Quora/ArguAna-style corpora)."""
    baseline: str | None = None
    """Config the report compares the others with; defaults to the first config."""
    bootstrap_samples: int = Field(default=1000, ge=100)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            parse_metric(name)
        return value


class AnswerSection(_Section):
    qa_file: str = "answers.jsonl"
    """QA JSON lines, relative to the dataset folder."""
    top_k: int = Field(default=5, ge=1)
    max_examples: int | None = Field(default=None, ge=1)
    config: str | None = None
    """Config whose retrieval feeds the generator; defaults to the baseline."""


@dataclass(frozen=True, slots=True)
class Suite:
    name: str
    path: Path
    dataset: DatasetSection
    dataset_path: Path
    retrieval: RetrievalSection
    answer: AnswerSection | None
    references: dict[str, float]
    configs: tuple[EvalConfig, ...]
    fingerprint: str
    """Hash of the dataset and retrieval settings; with a config's own settings it keys that config's
    checkpoint, so editing one config re-runs only that config."""

    @property
    def baseline(self) -> str:
        return self.retrieval.baseline or self.configs[0].name


def _section(model: type[_Section], raw: Any, name: str, loc: TomlLocator) -> Any:
    if not isinstance(raw, dict):
        raise loc.error(f"[{name}] must be a table", name)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            known = ", ".join(model.model_fields)
            raise loc.error(f"unknown key {field[0]!r} in [{name}]; known keys: {known}", name, *field) from exc
        label = ".".join(str(p) for p in field)
        raise loc.error(f"[{name}] {label}: {err['msg']}", name, *field[:1]) from exc


def _parse_configs(raw: Any, loc: TomlLocator) -> tuple[EvalConfig, ...]:
    if not isinstance(raw, list) or not raw:
        raise loc.error("a suite needs at least one [[configs]] table", "configs")
    configs: list[EvalConfig] = []
    names: set[str] = set()
    for i, table in enumerate(raw):
        kind_name = table.get("kind", "index")
        kind = config_kind(kind_name)
        if kind is None:
            raise loc.error(f"unknown config kind {kind_name!r}; known: {', '.join(known_kinds())}",
                            "configs", i, "kind")
        config = kind.parse(table, where=lambda *key, i=i: loc.where("configs", i, *key))
        if config.name in names:
            raise loc.error(f"duplicate config name {config.name!r}; names must be unique", "configs", i, "name")
        names.add(config.name)
        configs.append(config)
    return tuple(configs)


def _check_consistency(retrieval: RetrievalSection, answer: AnswerSection | None, configs: tuple[EvalConfig, ...],
                       loc: TomlLocator) -> None:
    """Checks across sections: names that must refer to configs, a depth that covers every metric."""
    names = {c.name for c in configs}
    for section, key, value in (("retrieval", "baseline", retrieval.baseline),
                                ("answer", "config", answer.config if answer else None)):
        if value is not None and value not in names:
            raise loc.error(f"{key} {value!r} is not one of the configs: {', '.join(sorted(names))}", section, key)
    max_k = max(parse_metric(m)[1] for m in retrieval.metrics)
    if retrieval.depth < max_k:
        raise loc.error(f"depth {retrieval.depth} is below the largest metric cut-off {max_k}", "retrieval", "depth")


_TOP_KEYS = ("name", "description", "dataset", "retrieval", "answer", "references", "configs")


def load_suite(path: Path) -> Suite:
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: suite file not found; suites live in eval/suites/*.toml")
    text = path.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        at = re.search(r"\(at line (\d+)", str(exc))
        raise InvalidInput(f"{path}{':' + at.group(1) if at else ''}: invalid TOML: {exc}") from exc
    loc = TomlLocator(path, text)
    for key in raw:
        if key not in _TOP_KEYS:
            raise loc.error(f"unknown key {key!r}; known top-level keys: {', '.join(_TOP_KEYS)}", key)
    name = str(raw.get("name", path.stem))
    if not _SUITE_NAME.match(name):
        raise loc.error(f"suite name {name!r} must be 1-20 letters, digits, _ or -", "name")
    if "dataset" not in raw:
        raise loc.error("missing [dataset] table with `path`")
    dataset = _section(DatasetSection, raw["dataset"], "dataset", loc)
    retrieval = _section(RetrievalSection, raw.get("retrieval", {}), "retrieval", loc)
    answer = _section(AnswerSection, raw["answer"], "answer", loc) if "answer" in raw else None
    references = raw.get("references", {})
    if not isinstance(references, dict) or not all(isinstance(v, int | float) for v in references.values()):
        raise loc.error("[references] maps a label to a number (published nDCG@10)", "references")
    configs = _parse_configs(raw.get("configs"), loc)
    _check_consistency(retrieval, answer, configs, loc)
    dataset_path = Path(dataset.path).expanduser()
    if not dataset_path.is_absolute():
        dataset_path = (path.parent / dataset_path).resolve()
    shared = {"dataset": dataset.model_dump(), "path": str(dataset_path), "retrieval": retrieval.model_dump()}
    canonical = json.dumps(shared, sort_keys=True, default=str)
    return Suite(name=name, path=path, dataset=dataset, dataset_path=dataset_path, retrieval=retrieval,
                 answer=answer, references={str(k): float(v) for k, v in references.items()}, configs=configs,
                 fingerprint=hashlib.sha256(canonical.encode()).hexdigest()[:16])
