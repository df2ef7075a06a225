"""Dataset loaders: BEIR retrieval folders and question-answering files, validated line by line.

BEIR layout (https://github.com/beir-cellar/beir): `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl`
(`_id`, `text`), `qrels/<split>.tsv` (`query-id`, `corpus-id`, `score`, optional header). As BEIR does, only
queries that appear in the split's qrels are evaluated.

QA layout: one JSON object per line with a question (`question` or `text`), gold answers (`answer` or `answers`,
a string or a list) and optionally an id (`_id` / `id`; the line number otherwise). Supporting passage ids come
from a BEIR qrels file beside it when there is one (HotpotQA's supporting paragraphs).

Every problem is an `InvalidInput` naming the file and line, so a user can open the file and fix it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragsvc.errors import InvalidInput

Qrels = dict[str, dict[str, int]]
"""query id -> corpus id -> graded relevance (0 means judged non-relevant)."""


@dataclass(frozen=True, slots=True)
class CorpusDoc:
    id: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def full_text(self) -> str:
        """Title and body joined by a space, as BEIR's sentence-transformers wrapper embeds them."""
        return f"{self.title} {self.text}".strip()


@dataclass(frozen=True, slots=True)
class RetrievalDataset:
    name: str
    path: Path
    corpus: dict[str, CorpusDoc]
    queries: dict[str, str]
    """Only the queries judged in `qrels`, in file order."""
    qrels: Qrels


@dataclass(frozen=True, slots=True)
class QAExample:
    id: str
    question: str
    answers: tuple[str, ...]
    supporting_ids: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise InvalidInput(f"{path}: file not found; {what}")


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) per line, decoded line by line so that bytes which are not UTF-8 are
    reported at their line; a leading byte-order mark is dropped."""
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"{path}:{line_no}: not UTF-8 text (column {exc.start + 1}); "
                                   "save the file as UTF-8") from exc
            yield line_no, line.removeprefix("\ufeff") if line_no == 1 else line


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for every non-blank line; a malformed line names itself."""
    for line_no, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path}:{line_no}: not valid JSON ({exc.msg}); fix or remove the line") from exc
        except RecursionError as exc:
            raise InvalidInput(f"{path}:{line_no}: JSON nested too deeply to read; flatten it") from exc
        if not isinstance(obj, dict):
            raise InvalidInput(f"{path}:{line_no}: expected a JSON object, got {type(obj).__name__}")
        yield line_no, obj


def _string_id(path: Path, line_no: int, obj: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        if key in obj:
            value = obj[key]
            if not isinstance(value, str | int) or str(value).strip() == "":
                raise InvalidInput(f"{path}:{line_no}: {key!r} must be a non-empty string, got {value!r}")
            return str(value)
    return None


def _check_duplicate(path: Path, line_no: int, doc_id: str, seen: dict[str, int]) -> None:
    if doc_id in seen:
        raise InvalidInput(
            f"{path}:{line_no}: duplicate id {doc_id!r} (first seen at line {seen[doc_id]}); ids must be unique"
        )
    seen[doc_id] = line_no


def load_corpus(path: Path) -> dict[str, CorpusDoc]:
    _require_file(path, "a BEIR corpus is a JSON-lines file with `_id`, `title`, `text`")
    corpus: dict[str, CorpusDoc] = {}
    seen: dict[str, int] = {}
    for line_no, obj in _json_lines(path):
        doc_id = _string_id(path, line_no, obj, "_id")
        if doc_id is None:
            raise InvalidInput(f"{path}:{line_no}: missing '_id'; every corpus line needs one")
        _check_duplicate(path, line_no, doc_id, seen)
        title, text = str(obj.get("title") or ""), str(obj.get("text") or "")
        if not (title + text).strip():
            raise InvalidInput(f"{path}:{line_no}: document {doc_id!r} has empty title and text; remove it")
        raw_metadata = obj.get("metadata")
        corpus[doc_id] = CorpusDoc(doc_id, title, text, raw_metadata if isinstance(raw_metadata, dict) else {})
    if not corpus:
        raise InvalidInput(f"{path}: the corpus is empty")
    return corpus


def load_queries(path: Path) -> dict[str, str]:
    _require_file(path, "BEIR queries are a JSON-lines file with `_id` and `text`")
    queries: dict[str, str] = {}
    seen: dict[str, int] = {}
    for line_no, obj in _json_lines(path):
        query_id = _string_id(path, line_no, obj, "_id")
        if query_id is None:
            raise InvalidInput(f"{path}:{line_no}: missing '_id'; every query line needs one")
        _check_duplicate(path, line_no, query_id, seen)
        text = obj.get("text")
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput(f"{path}:{line_no}: query {query_id!r} has empty text; give it text or remove it")
        queries[query_id] = text
    return queries


def _qrels_rows(path: Path) -> Iterator[tuple[int, str, str, int]]:
    for line_no, line in _text_lines(path):
        if not line.strip():
            continue
        parts = line.rstrip("\r\n").split("\t")
        if line_no == 1 and parts[0].strip().lower() in ("query-id", "query_id", "qid"):
            continue  # header line
        if len(parts) != 3:
            raise InvalidInput(
                f"{path}:{line_no}: expected 3 tab-separated columns (query-id, corpus-id, score), "
                f"got {len(parts)}"
            )
        try:
            score = int(parts[2])
        except ValueError as exc:
            raise InvalidInput(f"{path}:{line_no}: score {parts[2]!r} is not an integer") from exc
        yield line_no, parts[0].strip(), parts[1].strip(), score


def load_qrels(path: Path, *, corpus: dict[str, Any] | None = None, queries: dict[str, str] | None = None) -> Qrels:
    """Read a qrels TSV; ids missing from the given corpus or queries are errors, not silently dropped."""
    _require_file(path, "qrels are a TSV file `query-id<TAB>corpus-id<TAB>score` with an optional header")
    qrels: Qrels = {}
    seen: dict[tuple[str, str], int] = {}
    for line_no, query_id, doc_id, score in _qrels_rows(path):
        if queries is not None and query_id not in queries:
            raise InvalidInput(f"{path}:{line_no}: query id {query_id!r} is not in the queries file")
        if corpus is not None and doc_id not in corpus:
            raise InvalidInput(f"{path}:{line_no}: corpus id {doc_id!r} is not in the corpus; fix the qrels")
        if (query_id, doc_id) in seen:
            raise InvalidInput(
                f"{path}:{line_no}: duplicate judgement for ({query_id!r}, {doc_id!r}) "
                f"(first at line {seen[(query_id, doc_id)]})"
            )
        seen[(query_id, doc_id)] = line_no
        qrels.setdefault(query_id, {})[doc_id] = score
    if not qrels:
        raise InvalidInput(f"{path}: no judgements found")
    return qrels


def load_beir(path: Path, *, split: str = "test", max_queries: int | None = None) -> RetrievalDataset:
    """Load a BEIR folder. `max_queries` keeps the first N judged queries (file order) for quick runs."""
    path = Path(path)
    if not path.is_dir():
        raise InvalidInput(f"{path}: dataset folder not found; point the suite's `dataset.path` at a BEIR folder")
    corpus = load_corpus(path / "corpus.jsonl")
    all_queries = load_queries(path / "queries.jsonl")
    qrels = load_qrels(path / "qrels" / f"{split}.tsv", corpus=corpus, queries=all_queries)
    queries = {qid: text for qid, text in all_queries.items() if qid in qrels}
    if max_queries is not None:
        queries = dict(list(queries.items())[:max_queries])
        qrels = {qid: qrels[qid] for qid in queries}
    return RetrievalDataset(name=path.name, path=path, corpus=corpus, queries=queries, qrels=qrels)


def _answers(path: Path, line_no: int, obj: dict[str, Any]) -> tuple[str, ...]:
    raw = obj.get("answers", obj.get("answer"))
    values = [raw] if isinstance(raw, str) else raw
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise InvalidInput(f"{path}:{line_no}: 'answer'/'answers' must be a non-empty string or list of strings")
    return tuple(values)


def load_qa(path: Path, *, qrels_path: Path | None = None, max_examples: int | None = None,
            skip_examples: int = 0) -> list[QAExample]:
    """Load a QA JSON-lines file; supporting passage ids come from `qrels_path` (score > 0) when given. The
    first `skip_examples` questions are read (and checked) but left out: a later slice of the same file."""
    path = Path(path)
    _require_file(path, "a QA file is JSON lines with `question` and `answer`/`answers`")
    qrels = load_qrels(qrels_path) if qrels_path is not None else {}
    examples: list[QAExample] = []
    seen: dict[str, int] = {}
    for line_no, obj in _json_lines(path):
        example_id = _string_id(path, line_no, obj, "_id", "id") or str(line_no)
        _check_duplicate(path, line_no, example_id, seen)
        question = obj.get("question", obj.get("text"))
        if not isinstance(question, str) or not question.strip():
            raise InvalidInput(f"{path}:{line_no}: question {example_id!r} is empty; give it text or remove it")
        answers = _answers(path, line_no, obj)
        if len(seen) <= skip_examples:
            continue
        supporting = tuple(doc for doc, rel in qrels.get(example_id, {}).items() if rel > 0)
        extra = {k: v for k, v in obj.items() if k not in ("_id", "id", "question", "text", "answer", "answers")}
        examples.append(QAExample(example_id, question, answers, supporting, extra))
        if max_examples is not None and len(examples) >= max_examples:
            break
    if not examples:
        after = f" after the first {skip_examples} (skip_examples)" if skip_examples else ""
        raise InvalidInput(f"{path}: no questions found{after}")
    return examples
