"""Each input that once answered 500 (or was silently accepted) now gets a clear 4xx, against a real uvicorn.

The 500s came from a fuzzing run: a lone UTF-16 surrogate in any text, id, metadata or query; `?offset=` past
int64; `/v1/repos` with an over-long path or `~user`. The silent acceptances: NaN / Infinity metadata stored as
null, a collection named "nl\\n", a document id with `/` that could not be fetched again, a repo job with a bad
collection name answered 202, `/v1/repos` telling whether a path outside the allowed roots exists, and values of
the wrong JSON type converted (`"k": true` read as 1).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter

from tests.api.conftest import LiveServer, free_port, make_settings

JSON = {"content-type": "application/json"}

boom = APIRouter()


@boom.get("/test/boom")
def _boom() -> None:
    raise RuntimeError("a bug, not a user error")


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> Path:
    allowed = tmp_path_factory.mktemp("roots")
    (allowed / "repo").mkdir()
    return allowed


@pytest.fixture(scope="module")
def server(tmp_path_factory, roots) -> Iterator[LiveServer]:
    from ragsvc.api.app import create_app

    app = create_app(make_settings(tmp_path_factory.mktemp("bad") / "data"), extra_routers=[boom])
    app.state.repo_roots = (roots,)
    live = LiveServer(app, free_port())
    live.start()
    with httpx.Client(base_url=live.url, timeout=60) as c:
        assert c.post("/v1/collections", json={"name": "c"}).status_code == 201
        assert c.post("/v1/collections/c/documents", json={"documents": [{"id": "d", "text": "hello"}]}).status_code \
            == 201
    yield live
    live.stop()


@pytest.fixture()
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def _count(client: httpx.Client) -> int:
    return client.get("/v1/collections/c").json()["num_documents"]


@pytest.mark.parametrize(("path", "raw", "field"), [
    ("/v1/collections/c/documents", '{"documents": [{"text": "a\\ud800b"}]}', "body.documents.0.text"),
    ("/v1/collections/c/documents", '{"documents": [{"id": "\\udfff", "text": "t"}]}', "body.documents.0.id"),
    ("/v1/collections/c/documents", '{"documents": [{"text": "t", "metadata": {"k": ["ok", "\\ud83d"]}}]}',
     "body.documents.0.metadata.k.1"),
    ("/v1/collections/c/documents", '{"documents": [{"text": "t", "metadata": {"\\ud800": 1}}]}',
     "body.documents.0.metadata"),
    ("/v1/collections/c/documents", '{"documents": [{"text": "t", "source": "\\ud800"}]}', "body.documents.0.source"),
    ("/v1/collections/c/search", '{"query": "\\udc00", "k": 1}', "body.query"),
    ("/v1/collections/c/search", '{"query": "x", "k": 1, "filter": {"tag": "\\ud800"}}', "body.filter.tag"),
    ("/v1/collections", '{"name": "\\ud800"}', "body.name"),
    ("/v1/answer", '{"question": "\\ud800?", "collection": "c"}', "body.question"),
    ("/v1/repos", '{"path": "\\ud800"}', "body.path"),
])
def test_lone_surrogates_get_400_naming_the_field(client, path, raw, field):
    before = _count(client)
    r = client.post(path, content=raw.encode(), headers=JSON)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_input" and r.json()["detail"].startswith(field + ":"), r.text
    assert "surrogate" in r.json()["detail"]
    assert _count(client) == before


@pytest.mark.parametrize("raw", [b"\xd8\xa8\xff\xfe5fUs", b'{"query": "caf\xe9", "k": 1}'])
def test_a_body_that_is_not_utf8_gets_400(client, raw):
    r = client.post("/v1/collections/c/search", content=raw, headers=JSON)
    assert r.status_code == 400 and "not UTF-8" in r.json()["detail"], r.text


@pytest.mark.parametrize("path", ["/v1/collections/c/search", "/v1/collections/c/documents"])
def test_json_nested_past_the_parser_gets_400_saying_so(client, path):
    raw = '{"query": "x", "filter": {"a": {"$eq": ' + "[" * 5000 + "1" + "]" * 5000 + "}}}"
    r = client.post(path, content=raw.encode(), headers=JSON)
    assert r.status_code == 400 and "nested too deeply" in r.json()["detail"], r.text
    wide = {"documents": [{"id": f"w{i}", "text": "wide", "metadata": {"n": [i]}} for i in range(300)]}
    assert client.post("/v1/collections/c/documents", json=wide).status_code == 201  # many brackets, shallow


def test_an_integer_longer_than_python_converts_gets_400_saying_so(client):
    before = _count(client)
    digits = sys.get_int_max_str_digits() + 1
    raw = '{"documents": [{"id": "big", "text": "t", "metadata": {"n": ' + "9" * digits + "}}]}"
    r = client.post("/v1/collections/c/documents", content=raw.encode(), headers=JSON)
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith(f"body: a number at byte {raw.index('9')} has {digits} digits"), r.text
    assert _count(client) == before
    as_text = {"documents": [{"id": "big", "text": "9" * digits, "metadata": {"n": 2**64}}]}  # digits in a string
    assert client.post("/v1/collections/c/documents", json=as_text).status_code == 201
    assert client.delete("/v1/collections/c/documents/big").status_code == 204


def test_a_valid_surrogate_pair_is_text_like_any_other(client):
    raw = '{"documents": [{"id": "e", "text": "emoji \\ud83d\\ude00"}]}'
    r = client.post("/v1/collections/c/documents", content=raw, headers=JSON)
    assert r.status_code == 201, r.text
    assert client.get("/v1/collections/c/documents/e").json()["text"] == "emoji \U0001F600"
    assert client.delete("/v1/collections/c/documents/e").status_code == 204


@pytest.mark.parametrize("text", ["", " ", "\n\t  \r\n"])
def test_a_document_with_no_text_gets_400_naming_the_field(client, text):
    before = _count(client)
    r = client.post("/v1/collections/c/documents", json={"documents": [{"id": "ok", "text": "fine"}, {"text": text}]})
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("body.documents.1.text: empty or only whitespace; every document needs")
    assert _count(client) == before  # the batch is refused whole


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_metadata_is_refused_not_stored_as_null(client, number):
    before = _count(client)
    raw = '{"documents": [{"id": "n", "text": "t", "metadata": {"score": NUMBER}}]}'.replace("NUMBER", number)
    r = client.post("/v1/collections/c/documents", content=raw, headers=JSON)
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("body.documents.0.metadata.score: numbers must be finite")
    assert _count(client) == before


def test_the_word_nan_inside_text_is_fine(client):
    r = client.post("/v1/collections/c/documents",
                    json={"documents": [{"id": "w", "text": "NaN and Infinity are words", "metadata": {"x": 1e300}}]})
    assert r.status_code == 201, r.text
    assert client.delete("/v1/collections/c/documents/w").status_code == 204


@pytest.mark.parametrize("scale", [1e37, 1e-30])
def test_cosine_search_by_a_huge_or_tiny_vector_ranks_as_by_its_direction(client, scale):
    """Cosine ignores length: v * 1e37 once normalised to all zeros (norm overflowed; every score 0) and
    v * 1e-30 was refused as "all zeros" (its square underflowed)."""
    docs = [{"id": f"s{i}", "text": text} for i, text in enumerate(["red apples", "blue ocean", "green forest"])]
    assert client.post("/v1/collections/c/documents", json={"documents": docs}).status_code == 201
    vector = [0.5, -0.25] * 192  # any direction: compare the plain vector with its scaled twin
    plain = client.post("/v1/collections/c/search", json={"vector": vector, "k": 4}).json()["hits"]
    scaled = client.post("/v1/collections/c/search", json={"vector": [x * scale for x in vector], "k": 4})
    assert scaled.status_code == 200, scaled.text
    hits = scaled.json()["hits"]
    assert [h["chunk_id"] for h in hits] == [h["chunk_id"] for h in plain]
    assert [h["score"] for h in hits] == pytest.approx([h["score"] for h in plain], abs=1e-5)
    assert any(abs(h["score"]) > 1e-3 for h in hits)
    for doc in docs:
        assert client.delete(f"/v1/collections/c/documents/{doc['id']}").status_code == 204


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/collections/c/search", {"query": "hello", "k": True}, "body.k: Input should be a valid integer"),
    ("/v1/collections/c/search", {"query": "hello", "k": "3"}, "body.k: Input should be a valid integer"),
    ("/v1/collections/c/search", {"query": "hello", "k": 3.0}, "body.k: Input should be a valid integer"),
    ("/v1/collections/c/search", {"query": "hello", "allow_partial": "no"}, "body.allow_partial: Input should be a "
                                                                            "valid boolean"),
    ("/v1/collections/c/search", {"query": 5}, "body.query: Input should be a valid string"),
    ("/v1/collections/c/search", {"query": "hello", "hyde": {"n": "2"}}, "body.hyde.n: Input should be a valid "
                                                                        "integer"),
    ("/v1/collections", {"name": "typed", "chunk_tokens": "64"}, "body.chunk_tokens: Input should be a valid integer"),
    ("/v1/collections", {"name": "typed", "index": {"hnsw_m": "16"}}, "body.index: hnsw_m: Input should be a valid "
                                                                     "integer (got '16')"),
    ("/v1/collections", {"name": "typed", "index": {"rotate": 1}}, "body.index: rotate: Input should be a valid "
                                                                  "boolean (got 1)"),
    ("/v1/collections/c/documents", {"documents": [{"text": 5}]}, "body.documents.0.text: Input should be a valid "
                                                                  "string"),
    ("/v1/answer", {"question": "q", "collection": "c", "stream": "false"}, "body.stream: Input should be a valid "
                                                                          "boolean"),
    ("/v1/agents", {"name": "Typed", "age": True}, "body.age: Input should be a valid integer"),
    ("/v1/keys", {"name": "typed", "scopes": ["read"], "collections": "c"}, "body.collections: Input should be a "
                                                                           "valid list"),
])
def test_a_value_of_the_wrong_json_type_gets_400_not_a_conversion(client, path, body, field):
    """Lax validation took `true` and `"3"` as the counts 1 and 3 and `"no"` as the flag false; a typed API says
    what it expected instead."""
    before = _count(client)
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith(field), r.text
    assert _count(client) == before
    assert "typed" not in [c["name"] for c in client.get("/v1/collections").json()]


def test_a_float_field_still_takes_an_integer(client):
    r = client.post("/v1/collections/c/search", json={"query": "hello", "k": 2, "mode": "hybrid", "fusion": "convex",
                                                      "alpha": 1})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(("headers", "said"), [
    ({}, "this request has no Content-Type"),
    ({"content-type": "text/plain;charset=UTF-8"}, "this request says Content-Type 'text/plain;charset=UTF-8'"),
    ({"content-type": "application/x-www-form-urlencoded"}, "(what curl -d sends unless told otherwise)"),
    ({"content-type": "application/json", "content-encoding": "gzip"}, "Content-Encoding 'gzip' is not accepted"),
])
def test_a_body_not_declared_as_json_gets_415_and_writes_nothing(client, headers, said):
    """A browser sends a cross-origin POST without asking the server first only when its body is undeclared, a
    form or text/plain: refusing those keeps any web page from writing to a keyless server on loopback."""
    before = _count(client)
    body = b'{"documents": [{"id": "undeclared", "text": "from a web page"}]}'
    r = client.post("/v1/collections/c/documents", content=body, headers=headers)
    assert r.status_code == 415, r.text
    assert r.json()["error"] == "unsupported_media_type" and said in r.json()["detail"], r.text
    assert _count(client) == before
    r = client.post("/v1/collections", content=b'{"name": "undeclared"}', headers=headers)
    assert r.status_code == 415 and "undeclared" not in [c["name"] for c in client.get("/v1/collections").json()]


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON",
                                          "application/merge-patch+json"])
def test_json_under_any_json_media_type_is_read(client, content_type):
    r = client.post("/v1/collections/c/search", content=b'{"query": "hello", "k": 1}',
                    headers={"content-type": content_type})
    assert r.status_code == 200, r.text


def test_an_empty_body_needs_no_content_type(client):
    assert client.post("/v1/agents", json={"name": "Quiet", "age": 40}).status_code == 201
    r = client.post("/v1/agents/quiet/sessions")  # the body is optional here: nothing to declare
    assert r.status_code == 201, r.text
    assert client.delete("/v1/agents/quiet").status_code == 204


@pytest.mark.parametrize("offset", [str(2**63), str(2**64 + 5), "99999999999999999999999999"])
def test_offset_beyond_int64_gets_400(client, offset):
    r = client.get("/v1/collections/c/documents", params={"offset": offset})
    assert r.status_code == 400 and "offset" in r.json()["detail"], r.text


def test_collection_name_with_trailing_newline_is_refused(client):
    for name in ("nl\n", "nl\r\n", "a b", "-lead", "x" * 65):
        r = client.post("/v1/collections", json={"name": name})
        assert r.status_code == 400, (name, r.text)
    assert "nl\n" not in [c["name"] for c in client.get("/v1/collections").json()]


def test_document_ids_with_slashes_can_be_fetched_and_deleted(client):
    for doc_id in ("a/b", "a/b/c", "/lead", "trail/", "a b?c#d%e"):
        r = client.post("/v1/collections/c/documents", json={"documents": [{"id": doc_id, "text": f"text {doc_id}"}]})
        assert r.status_code == 201, r.text
        from urllib.parse import quote

        for encoded in (quote(doc_id, safe=""), quote(doc_id, safe="/")):
            got = client.get(f"/v1/collections/c/documents/{encoded}")
            assert got.status_code == 200 and got.json()["id"] == doc_id, (doc_id, encoded, got.text)
        assert client.delete(f"/v1/collections/c/documents/{quote(doc_id, safe='')}").status_code == 204
        assert client.get(f"/v1/collections/c/documents/{quote(doc_id, safe='')}").status_code == 404


@pytest.mark.parametrize("doc_id", ["", ".", "..", "a/../b", "a/./b", "line\nbreak", "tab\there", "x" * 513])
def test_ids_that_urls_cannot_carry_are_refused(client, doc_id):
    r = client.post("/v1/collections/c/documents", json={"documents": [{"id": doc_id, "text": "t"}]})
    assert r.status_code == 400 and "body.documents.0.id" in r.json()["detail"], r.text


def test_repo_path_errors_answer_before_the_202(client, roots):
    cases = {
        "x" * 300: "too long",
        "/" + "/".join(["\u00e9" * 100] * 21): "too long",  # 2,121 characters but 4,221 bytes
        "~nosuchuser/repo": "'~'",
        "~": "'~'",
        "a\u0000b": "NUL",
    }
    for path, needle in cases.items():
        r = client.post("/v1/repos", json={"path": path})
        assert r.status_code == 400 and needle in r.json()["detail"], (path[:40], r.text)
    r = client.post("/v1/repos", json={"path": str(roots / "repo"), "collection": "bad name"})
    assert r.status_code == 400 and "body.collection" in r.json()["detail"], r.text
    r = client.post("/v1/repos", json={"path": str(roots / "missing")})
    assert r.status_code == 400 and "does not exist" in r.json()["detail"]


def test_paths_outside_the_roots_all_get_the_same_answer(client, roots, tmp_path):
    (tmp_path / "exists").mkdir()
    (roots / "repo" / "escape").symlink_to(tmp_path / "exists")
    details = set()
    for path in (tmp_path / "exists", tmp_path / "missing", Path("/etc"), Path("/no/such/place"),
                 roots / ".." / "elsewhere", roots / "repo" / "escape"):
        r = client.post("/v1/repos", json={"path": str(path)})
        assert r.status_code == 400, (path, r.text)
        details.add(r.json()["detail"].replace(repr(str(path)), "PATH"))
    assert len(details) == 1 and "not allowed" in details.pop()


def test_an_unexpected_exception_is_a_json_500_with_the_request_id(client, caplog):
    r = client.get("/test/boom")
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "internal_error" and body["request_id"] == r.headers["x-request-id"]
    assert body["request_id"] in body["detail"] and "a bug" not in body["detail"]  # no internals leak
    assert any(body["request_id"] in rec.getMessage() for rec in caplog.records)


def test_every_response_carries_a_request_id_and_a_sane_given_one_is_kept(client):
    first, second = client.get("/health"), client.get("/health")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert client.get("/health", headers={"X-Request-ID": "trace-42"}).headers["x-request-id"] == "trace-42"
    odd = client.get("/health", headers={"X-Request-ID": "bad id\twith tab"}).headers["x-request-id"]
    assert odd != "bad id\twith tab"
    assert client.get("/v1/collections/nope").headers["x-request-id"]


@pytest.mark.slow
def test_model_server_bad_bodies_get_400_not_500(tmp_path):
    """Formerly 500 on the model server: FastAPI's own 400 for an unparsable body fell into the catch-all."""
    from ragsvc.api.model_app import create_model_app, serve_in_thread
    from tests.llm.conftest import engine_config

    app = create_model_app(engine_config(), settings=make_settings(tmp_path / "data"))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        for path in ("/v1/completions", "/v1/chat/completions"):
            for raw in (b"\xd8\xa8\xff\xfe5fUs", b'{"model": "smollm2", "prompt": "\\ud800", "max_tokens": 1}'):
                r = c.post(path, content=raw, headers=JSON)
                assert r.status_code == 400, (path, raw, r.text)
            r = c.post(path, content=b"{not json", headers=JSON)
            assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
