"""Whatever bytes a file holds, analysis never raises and its document passes the store's validation."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragsvc.code.analysis import analyse_bytes, to_document
from ragsvc.code.chunker import ChunkConfig
from ragsvc.code.languages import SUPPORTED_LANGUAGES
from ragsvc.code.tags import MAX_ERROR_CHILDREN
from ragsvc.retrieval.ingest import validate_batch

# Code-like fragments glued at random: keywords, brackets, strings, unicode and invalid bytes.
FRAGMENTS = [b"def ", b"class ", b"fn ", b"func ", b"function ", b"(", b")", b"{", b"}", b":", b"\n", b"    ",
             b"return x", b"\"\"\"doc\"\"\"", b"'", b"#", b"//", b"/*", b"*/", b"caf\xc3\xa9", b"\xff\xfe", b"x = 1",
             b"@dec\n", b"struct S", b"impl S", b"public void m()", b"int f(int a)", b";", b"\t", b"\x00"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    language=st.sampled_from(SUPPORTED_LANGUAGES),
    parts=st.lists(st.sampled_from(FRAGMENTS), max_size=80),
    max_chars=st.integers(min_value=200, max_value=600),
)
def test_any_bytes_analyse_into_valid_documents(language: str, parts: list[bytes], max_chars: int) -> None:
    raw = b"".join(parts)
    analysis = analyse_bytes(raw, rel_path=f"f.{language}", language=language,
                             chunk_config=ChunkConfig(max_chunk_chars=max_chars, strip_docstrings=True))
    for start, end in analysis.char_spans:
        assert 0 <= start <= end <= len(analysis.text)
    for d in analysis.tags.definitions:
        assert 1 <= d.start_line <= d.end_line
    doc = to_document(analysis)
    if doc is not None:
        assert validate_batch([doc]) == [doc.id]
        assert all(c.text.strip() for c in doc.chunks or [])


def test_a_query_that_does_not_fit_the_grammar_degrades_to_module_chunks(monkeypatch) -> None:
    import ragsvc.code.tags as tags

    tags._query.cache_clear()
    monkeypatch.setitem(tags.TAG_QUERIES, "go", "(no_such_node) @name.definition.function")
    try:
        analysis = analyse_bytes(b"package x\n\nfunc F() int { return 1 }\n", rel_path="x.go", language="go")
    finally:
        tags._query.cache_clear()
    assert analysis.problems[0].startswith("tag query for go does not fit the installed grammar")
    assert analysis.tags.definitions == ()
    assert [c.kind for c in analysis.chunks] == ["module"]  # the code is still indexed, as plain top-level code


def test_a_syntax_error_of_more_tokens_than_the_tag_query_can_take_is_chunked_untagged() -> None:
    # 20,001 unclosed brackets: one ERROR node, on which tree-sitter's query time grows with the square of its size
    raw = b"def kept(a):\n    return a\n\nx = " + b"[" * (MAX_ERROR_CHILDREN * 2) + b"\n"
    analysis = analyse_bytes(raw, rel_path="broken.py", language="python")
    assert analysis.tags.definitions == ()
    assert re.fullmatch(rf"not tagged: a syntax error spans (\d+) tokens \(more than {MAX_ERROR_CHILDREN}\); "
                        "chunked as plain code", analysis.problems[-1])
    assert "def kept(a)" in analysis.chunks[0].text  # still searchable as code
    assert validate_batch([to_document(analysis)])


def test_a_small_syntax_error_is_still_tagged_around() -> None:
    raw = b"def kept(a):\n    return a\n\nx = " + b"[" * 50 + b"\n"
    analysis = analyse_bytes(raw, rel_path="broken.py", language="python")
    assert [d.symbol for d in analysis.tags.definitions] == ["kept"]
