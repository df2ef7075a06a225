"""The typed sections of an evaluation suite's TOML, and `TomlLocator`, which maps keys to line numbers.

These sit below both `suite` (which parses a file into them) and `configs` (whose run context carries the
retrieval section), so neither has to import the other.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ragsvc.errors import InvalidInput
from ragsvc.evals.metrics import parse_metric

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)\s*=""")


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


class SuiteSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSection(SuiteSection):
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    """A BEIR folder of this name under the data root (`--data-root`, or RAGSVC_EVAL__DATA_ROOT): for
    datasets that live outside the repository."""
    path: str | None = None
    """A BEIR folder relative to the suite file (or absolute): for data shipped with the repository."""
    format: Literal["beir"] = "beir"
    split: str = "test"
    max_queries: int | None = Field(default=None, ge=1)
    """Evaluate only the first N judged queries (file order), for quick runs."""


    @model_validator(mode="after")
    def _one_location(self) -> DatasetSection:
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of `name` (a folder under the data root) or `path` (relative "
                             "to the suite file)")
        return self


class RetrievalSection(SuiteSection):
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


class FlareSection(SuiteSection):
    """FLARE's knobs for the `flare` answer strategy (ragsvc.answer.types.FlareOptions, same defaults)."""

    theta: float = Field(default=0.4, ge=0.0, le=1.0)
    beta: float = Field(default=0.4, ge=0.0, le=1.0)
    max_rounds: int = Field(default=4, ge=1, le=32)
    max_tokens: int = Field(default=64, ge=1, le=2048)
    lookahead_tokens: int = Field(default=32, ge=4, le=256)
    query_mode: Literal["masked", "question"] = "masked"
    stop_at_sentence: bool = False
    accept: Literal["surer", "always"] = "surer"


class AnswerSection(SuiteSection):
    qa_file: str = "answers.jsonl"
    """QA JSON lines, relative to the dataset folder."""
    top_k: int = Field(default=5, ge=1)
    max_examples: int | None = Field(default=None, ge=1)
    skip_examples: int = Field(default=0, ge=0)
    """Questions at the start of the file left out (a later slice: held-out questions, or a run in parts)."""
    config: str | None = None
    """Config whose retrieval feeds the generator; defaults to the baseline."""
    strategies: tuple[Literal["none", "single", "flare"], ...] = ()
    """Compare answer strategies through ragsvc.answer (none = closed book, single retrieval, FLARE), EM/F1
    and supporting-passage recall with paired tests against the first; needs the run's language model.
    Empty: the judged single-shot stage (EM/F1, faithfulness and citation precision from an LLM judge)."""
    max_tokens: int = Field(default=64, ge=1, le=2048)
    """Answer tokens of the `none` and `single` strategies (FLARE's are in [answer.flare])."""
    style: Literal["full", "short", "reasoning"] = "full"
    """Answer style of the strategies (ragsvc.answer.AnswerOptions.style): short asks for the answer alone;
    reasoning for a sentence per fact, then "So the answer is X" (scored on X)."""
    context_tokens: int = Field(default=1024, ge=16, le=32768)
    """Token budget of the first retrieval's passages in the prompt."""
    concurrency: int = Field(default=1, ge=1, le=64)
    """Questions answered at once (an in-process engine batches them)."""
    flare: FlareSection = FlareSection()

    @field_validator("strategies")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("list each strategy once")
        return value
