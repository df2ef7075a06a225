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
from typing import Any

from pydantic import ValidationError

from ragsvc.errors import InvalidInput
from ragsvc.evals.configs import EvalConfig
from ragsvc.evals.kinds import config_kind, known_kinds
from ragsvc.evals.metrics import parse_metric
from ragsvc.evals.sections import AnswerSection, DatasetSection, RetrievalSection, SuiteSection, TomlLocator

_SUITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,19}$")  # collection names are <= 64 chars


@dataclass(frozen=True, slots=True)
class Suite:
    name: str
    path: Path
    dataset: DatasetSection
    dataset_path: Path
    dataset_label: str
    """How results name the dataset: its name, or its path as the suite wrote it (never a machine path)."""
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


def _section(model: type[SuiteSection], raw: Any, name: str, loc: TomlLocator) -> Any:
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
    for i, config in enumerate(configs):
        other = getattr(config, "compare_to", None)
        if other is not None and other not in names:
            raise loc.error(f"compare_to {other!r} is not one of the configs: {', '.join(sorted(names))}",
                            "configs", i, "compare_to")
    max_k = max(parse_metric(m)[1] for m in retrieval.metrics)
    if retrieval.depth < max_k:
        raise loc.error(f"depth {retrieval.depth} is below the largest metric cut-off {max_k}", "retrieval", "depth")


_TOP_KEYS = ("name", "description", "dataset", "retrieval", "answer", "references", "configs")


def resolve_dataset(dataset: DatasetSection, suite_path: Path, data_root: Path | None, loc: TomlLocator) -> Path:
    """The dataset folder: `name` under the data root, or `path` relative to the suite file."""
    if dataset.name is not None:
        if data_root is None:
            raise loc.error(f"dataset {dataset.name!r} is read from a data root: pass --data-root DIR (the folder "
                            f"holding {dataset.name}/) or set RAGSVC_EVAL__DATA_ROOT", "dataset", "name")
        folder = Path(data_root).expanduser() / dataset.name
        if not folder.is_dir():
            raise loc.error(f"dataset folder {dataset.name!r} not found under the data root {data_root}; "
                            "check --data-root / RAGSVC_EVAL__DATA_ROOT", "dataset", "name")
        return folder.resolve()
    folder = Path(dataset.path or "").expanduser()
    return folder if folder.is_absolute() else (suite_path.parent / folder).resolve()


def load_suite(path: Path, *, data_root: Path | None = None) -> Suite:
    """Parse and check a suite file. `data_root` is where datasets named by `[dataset] name` live."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: suite file not found; suites live in eval/suites/*.toml")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 text (at byte offset {exc.start}); save it as UTF-8 TOML") from exc
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
        raise loc.error("missing [dataset] table with `name` (under the data root) or `path`")
    dataset = _section(DatasetSection, raw["dataset"], "dataset", loc)
    retrieval = _section(RetrievalSection, raw.get("retrieval", {}), "retrieval", loc)
    answer = _section(AnswerSection, raw["answer"], "answer", loc) if "answer" in raw else None
    references = raw.get("references", {})
    if not isinstance(references, dict) or not all(isinstance(v, int | float) for v in references.values()):
        raise loc.error("[references] maps a label to a number (published nDCG@10)", "references")
    configs = _parse_configs(raw.get("configs"), loc)
    _check_consistency(retrieval, answer, configs, loc)
    dataset_path = resolve_dataset(dataset, path, data_root, loc)
    dataset_label = dataset.name or str(dataset.path)
    shared = {"dataset": dataset.model_dump(), "retrieval": retrieval.model_dump()}
    canonical = json.dumps(shared, sort_keys=True, default=str)
    return Suite(name=name, path=path, dataset=dataset, dataset_path=dataset_path, dataset_label=dataset_label,
                 retrieval=retrieval,
                 answer=answer, references={str(k): float(v) for k, v in references.items()}, configs=configs,
                 fingerprint=hashlib.sha256(canonical.encode()).hexdigest()[:16])
