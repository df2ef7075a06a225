"""The code benchmark's task builders (pure parts; the full run is `ragsvc bench code`)."""

from __future__ import annotations

from pathlib import Path

from ragsvc.bench.code import copy_subset
from ragsvc.bench.code_quality import _bm25_run, docstring_task


def test_docstring_task_queries_target_their_definition_and_chunks_lose_docstrings(polyglot: Path) -> None:
    task = docstring_task(polyglot / "pkg")
    pairs = {task.queries[q]: next(iter(task.qrels[q])) for q in task.queries}
    assert pairs == {
        "Lower-case and strip a string.": "core.py::normalize",
        "Nobody calls this function.": "core.py::leaf_helper",
        "Retries a call with backoff.": "core.py::Retrier",
        "Call fn until it succeeds.": "core.py::Retrier.run",
    }
    texts = "\n".join(c.text for a in task.analyses for c in a.chunks)
    assert not any(query in texts for query in pairs)
    assert "return text.strip().lower()" in texts


def test_bm25_peer_finds_lexical_matches(polyglot: Path) -> None:
    task = docstring_task(polyglot / "pkg")
    run = _bm25_run(task)
    by_query = {task.queries[q]: run[q] for q in task.queries}
    assert by_query["Call fn until it succeeds."][0] == "core.py::Retrier.run"  # `fn` appears in its code only


def test_copy_subset_never_touches_the_source(polyglot: Path, tmp_path: Path) -> None:
    copied = copy_subset(polyglot, ("go", "pkg/core.py"), tmp_path / "subset")
    assert sorted(p.relative_to(copied).as_posix() for p in copied.rglob("*") if p.is_file()) == [
        "go/server.go", "pkg/core.py"]
