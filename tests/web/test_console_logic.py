"""The console's pure script functions, run in the real browser by importing its modules from the server: the
event-stream parser over arbitrary chunking, the highlighter, citation markers, the filter check and the timings
bar."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_js(browser, plain_server):
    """run_js(module, body) -> the value of `body`, an async function body with the module bound as `m`."""
    context = browser.new_context()
    tab = context.new_page()
    tab.goto(plain_server.url + "/console/console.css")  # same origin, without the page's own requests

    def run(module: str, body: str):
        return tab.evaluate(f"async () => {{ const m = await import('/console/js/{module}'); {body} }}")

    yield run
    context.close()


STREAM = ('event: retrieval\ndata: {"round": 0, "query": "q"}\n\n: keep-alive\n\n'
          'event: text\ndata: {"text": "caf\\u00e9 \\ud83d\\ude00 [1]"}\n\nevent: answer\ndata: {"answer": "x"}\n\n')


@pytest.mark.parametrize("size", [1, 2, 7, 64, len(STREAM)])
def test_sse_parser_gives_the_same_events_however_the_stream_is_cut(run_js, size):
    events = run_js("sse.js", f"""
        const text = {json.dumps(STREAM)}; const parser = new m.SseParser(); const out = [];
        for (let i = 0; i < text.length; i += {size}) out.push(...parser.push(text.slice(i, i + {size})));
        return out;""")
    assert events == [{"kind": "retrieval", "data": {"round": 0, "query": "q"}},
                      {"kind": "text", "data": {"text": "café 😀 [1]"}},
                      {"kind": "answer", "data": {"answer": "x"}}]


def test_sse_parser_joins_data_lines_and_accepts_crlf(run_js):
    events = run_js("sse.js", r"""return new m.SseParser().push('event: text\r\ndata: "a\r\ndata: b"\r\n\r\n');""")
    assert events == [{"kind": "text", "data": '"a\nb"'}]


def test_highlight_marks_query_words_and_their_longer_forms_only(run_js):
    text = "Paged attention: pages of KV blocks. Unpaged memory (a.k.a. contiguous)."
    segments = run_js("highlight.js", f"return m.highlightSegments({json.dumps(text)}, 'how does PAGED memory work?');")
    assert [s["text"] for s in segments if s["match"]] == ["Paged", "memory"]
    assert "".join(s["text"] for s in segments) == text
    regex_chars = run_js("highlight.js", "return m.highlightSegments('a (b+c) d', 'b+c* [x');")
    assert regex_chars == [{"text": "a (b+c) d", "match": False}]


def test_only_markers_of_real_passages_become_citation_links(run_js):
    parts = run_js("ask.js", "return m.answerSegments('see [2] and [9], [2][1]', new Map([[1, {}], [2, {}]]));")
    assert parts == ["see ", {"n": 2}, " and [9], ", {"n": 2}, {"n": 1}]


@pytest.mark.parametrize(("text", "message"), [
    ('{"a": 1', "not valid JSON"), ("[1, 2]", "must be a JSON object"), ("null", "must be a JSON object"),
    ('"topic"', "must be a JSON object"),
])
def test_a_bad_filter_is_refused_before_sending(run_js, text, message):
    error = run_js("search.js", f"try {{ m.parseFilter({json.dumps(text)}); return null; }} "
                                "catch (e) { return e.message; }")
    assert error is not None and message in error and "Nothing was sent" in error


def test_a_good_filter_and_an_empty_one(run_js):
    parsed = run_js("search.js", """return m.parseFilter('{"topic": {"$in": ["hnsw"]}}');""")
    assert parsed == {"topic": {"$in": ["hnsw"]}}
    assert run_js("search.js", "return m.parseFilter('   ');") is None


def test_timing_segments_share_the_total_and_skip_empty_stages(run_js):
    result = run_js("timings.js", "return m.timingSegments({dense_ms: 3, lexical_ms: 1, fuse_ms: 0, total_ms: 8});")
    assert result == {"total": 8, "stages": [{"name": "dense", "ms": 3, "share": 0.375},
                                             {"name": "lexical", "ms": 1, "share": 0.125}]}


def test_why_an_answer_ended_is_said_in_words(run_js):
    said = run_js("ask.js", "return ['stop', 'length', 'rounds', 'repetition', 'no_passages', 'toString', 'new']"
                            ".map(m.finishText);")
    assert said == ["the model ended", "max tokens reached", "FLARE's rounds ran out",
                    "cut where the model began repeating itself",
                    "no passage matched, so nothing was asked of the model", "toString", "new"]
