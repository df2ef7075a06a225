"""Definition chunks: one per function/method, class skeletons, statement-boundary splits, exact spans."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ragsvc.code.analysis import analyse_bytes, to_document
from ragsvc.code.chunker import ChunkConfig, _Spans, chunk_file
from ragsvc.code.parser import parse_file, parse_text
from ragsvc.code.tags import extract_tags


def test_one_chunk_per_definition_with_docstrings_and_decorators(polyglot: Path) -> None:
    parsed = parse_file(polyglot / "pkg" / "core.py", language="python", rel_path="pkg/core.py")
    chunks = {c.symbol: c for c in chunk_file(parsed, extract_tags(parsed))}
    assert set(chunks) == {"<module>", "normalize", "leaf_helper", "Retrier", "Retrier.__init__", "Retrier.run"}
    assert chunks["leaf_helper"].text.startswith("@functools.cache\ndef leaf_helper(value):\n    \"\"\"Nobody")
    assert (chunks["Retrier.run"].start_line, chunks["Retrier.run"].end_line) == (23, 30)
    assert chunks["Retrier.run"].text.startswith("def run(self, fn):\n    \"\"\"Call fn")  # dedented
    # The class chunk is a skeleton: its methods are their own chunks.
    assert chunks["Retrier"].text == (
        'class Retrier(Base):\n    """Retries a call with backoff."""\n\n'
        "    def __init__(self, attempts): ...\n\n    def run(self, fn): ..."
    )


def test_doc_comments_belong_to_their_definition(polyglot: Path) -> None:
    parsed = parse_file(polyglot / "go" / "server.go", language="go", rel_path="go/server.go")
    chunks = chunk_file(parsed, extract_tags(parsed))
    handle = next(c for c in chunks if c.symbol == "Handle")
    assert handle.text.startswith("// Handle answers one request.\nfunc (s *Server) Handle")
    module = [c for c in chunks if c.kind == "module"]
    assert [c.text for c in module] == ["package server"]


def test_long_function_splits_on_statement_boundaries() -> None:
    body = "".join(f"    value_{i} = compute(x, {i}) + other(x)\n" for i in range(60))
    source = f"def big(x):\n    '''Doc.'''\n{body}    return value_1\n"
    parsed = parse_text(source, language="python", rel_path="big.py")
    chunks = chunk_file(parsed, extract_tags(parsed), config=ChunkConfig(max_chunk_chars=600))
    assert len(chunks) > 3
    assert all(c.num_parts == len(chunks) and c.symbol == "big" for c in chunks)
    assert [c.part for c in chunks] == list(range(1, len(chunks) + 1))
    for previous, current in zip(chunks, chunks[1:], strict=False):
        assert current.start_line == previous.end_line + 1  # contiguous, no statement cut in half
        assert current.text.startswith("def big(x):\n    value_")  # later parts carry the signature
    assert all(len(c.text) <= 600 + len("def big(x):\n") + 60 for c in chunks)
    assert chunks[-1].end_line == source.count("\n")


def test_strip_docstrings_removes_only_the_docstring(polyglot: Path) -> None:
    parsed = parse_file(polyglot / "pkg" / "core.py", language="python", rel_path="pkg/core.py")
    chunks = {c.symbol: c for c in chunk_file(parsed, extract_tags(parsed), config=ChunkConfig(strip_docstrings=True))}
    assert "Lower-case" not in chunks["normalize"].text
    assert "return text.strip().lower()" in chunks["normalize"].text
    assert "Nobody calls" not in chunks["leaf_helper"].text and "@functools.cache" in chunks["leaf_helper"].text


def test_document_spans_index_the_text_even_with_non_ascii() -> None:
    source = "# héllo wörld\ndef f():\n    return 'ünïcode'\n\n\ndef g():\n    return f()\n"
    analysis = analyse_bytes(source.encode("utf-8"), rel_path="u.py", language="python")
    doc = to_document(analysis)
    assert doc is not None and doc.id == "u.py" and doc.metadata["language"] == "python"
    for chunk in doc.chunks or []:
        assert doc.text[chunk.start_char : chunk.end_char].strip() == chunk.text.strip()
    meta = {c.metadata["symbol"]: c.metadata for c in doc.chunks or []}
    assert (meta["g"]["start_line"], meta["g"]["end_line"], meta["g"]["kind"]) == (6, 7, "function")


def test_file_without_code_gives_no_document() -> None:
    assert to_document(analyse_bytes(b"\n\n", rel_path="empty.py", language="python")) is None


@settings(max_examples=200, deadline=None)
@given(spans=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 30)).map(lambda t: (t[0], t[0] + t[1])),
                      max_size=12),
       start=st.integers(0, 70), length=st.integers(0, 40))
def test_span_lookups_agree_with_a_scan_of_every_span(spans, start, length) -> None:
    end = start + length
    covered = _Spans(spans)
    assert covered.any_around(start, end) == any(s <= start and end <= e for s, e in spans)
    assert covered.any_within(start, end) == any(start <= s and e <= end for s, e in spans)


def test_a_file_of_many_definitions_gets_each_its_own_chunk_and_lines() -> None:
    source = "".join(f"def f{i}(a):\n    return a\n\nX{i} = {i}\n" for i in range(3000))
    analysis = analyse_bytes(source.encode(), rel_path="many.py", language="python")
    functions = [c for c in analysis.chunks if c.kind == "function"]
    assert [(c.symbol, c.start_line, c.end_line) for c in functions] == [
        (f"f{i}", 4 * i + 1, 4 * i + 2) for i in range(3000)]
    module = [c for c in analysis.chunks if c.symbol == "<module>"]
    assert "X0 = 0" in module[0].text and "X2999 = 2999" in module[-1].text
    assert not any("def f" in c.text for c in module)
