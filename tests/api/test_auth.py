"""API keys, trusted hosts and rate limits against a real uvicorn on 127.0.0.1, through httpx."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ragsvc.retrieval.vector_store import CATALOG_FILE
from ragsvc.store.catalog import Catalog
from ragsvc.store.keys import KEYS_FILE, mint_key, read_keys_file
from tests.api.conftest import LiveServer, free_port, make_settings, raw_exchange

runner = CliRunner()


def _store_keys(data_dir: Path, *specs: tuple[str, list[str], list[str]]) -> dict[str, str]:
    """Mint and store keys before the server opens the catalog; name -> token."""
    catalog = Catalog(data_dir / CATALOG_FILE)
    try:
        tokens = {}
        for name, scopes, collections in specs:
            new = mint_key(name, scopes, collections)
            catalog.api_keys().add(new.record)
            tokens[name] = new.token
        return tokens
    finally:
        catalog.close()


def _start(settings, **kwargs) -> LiveServer:
    from ragsvc.api.app import create_app

    server = LiveServer(create_app(settings, **kwargs), free_port())
    server.start()
    return server


@pytest.fixture(scope="module")
def keyed(tmp_path_factory) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    data_dir = tmp_path_factory.mktemp("auth") / "data"
    data_dir.mkdir()
    tokens = _store_keys(data_dir, ("admin", ["admin"], []), ("reader", ["read"], []),
                         ("writer-a", ["write"], ["a"]), ("gone", ["admin"], []))
    catalog = Catalog(data_dir / CATALOG_FILE)
    catalog.api_keys().revoke(tokens["gone"].split("_")[1])
    catalog.close()
    server = _start(make_settings(data_dir))
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    with httpx.Client(base_url=server.url, timeout=60, headers=admin) as c:
        for name in ("a", "b"):
            assert c.post("/v1/collections", json={"name": name}).status_code == 201
            r = c.post(f"/v1/collections/{name}/documents", json={"documents": [{"id": "d", "text": "paged KV"}]})
            assert r.status_code == 201, r.text
    yield server, tokens
    server.stop()


def _as(server: LiveServer, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, timeout=60, headers=headers)


def test_missing_wrong_and_revoked_keys_get_401(keyed):
    server, tokens = keyed
    admin_token = tokens["admin"]
    wrong_secret = admin_token[:-4] + ("AAAA" if not admin_token.endswith("AAAA") else "BBBB")
    for token in (None, "rsk_nope_nope", wrong_secret, "not-a-key", tokens["gone"]):
        with _as(server, token) as c:
            r = c.get("/v1/collections")
            assert r.status_code == 401, (token, r.text)
            assert r.json()["error"] == "unauthorized" and r.headers["www-authenticate"].startswith("Bearer")
    with _as(server, tokens["gone"]) as c:
        assert "revoked" in c.get("/v1/collections").json()["detail"]
    with _as(server, None) as c:
        assert c.get("/health").status_code == 200  # health stays public
        assert c.head("/health").status_code == 200


def test_scopes_nest_and_wrong_scope_gets_403(keyed):
    server, tokens = keyed
    with _as(server, tokens["reader"]) as c:
        assert c.get("/v1/collections").status_code == 200
        assert c.post("/v1/collections/a/search", json={"query": "kv", "k": 1}).status_code == 200  # POST, read
        r = c.post("/v1/collections/a/documents", json={"documents": [{"text": "x"}]})
        assert r.status_code == 403 and "needs write" in r.json()["detail"]
        assert c.delete("/v1/collections/a").status_code == 403
        assert c.get("/v1/keys").status_code == 403
    with _as(server, tokens["writer-a"]) as c:  # write grants read on its collection; admin routes stay closed
        assert c.post("/v1/collections/a/search", json={"query": "kv", "k": 1}).status_code == 200
        r = c.post("/v1/collections/a/documents", json={"documents": [{"id": "w", "text": "written by writer-a"}]})
        assert r.status_code == 201, r.text
        assert c.delete("/v1/collections/a/documents/w").status_code == 204
        assert c.post("/v1/collections", json={"name": "c"}).status_code == 403



def test_agents_are_created_and_deleted_by_admins_only(keyed):
    server, tokens = keyed
    persona = {"name": "Ada Okafor", "age": 33, "traits": ["curious"], "memories": ["I run the library."]}
    with _as(server, tokens["reader"]) as c:
        r = c.post("/v1/agents", json=persona)
        assert r.status_code == 403 and "needs admin" in r.json()["detail"]
    with _as(server, tokens["admin"]) as c:
        assert c.post("/v1/agents", json=persona).status_code == 201
    with _as(server, tokens["reader"]) as c:
        assert c.get("/v1/agents/ada-okafor").status_code == 200
        assert c.delete("/v1/agents/ada-okafor").status_code == 403
    with _as(server, tokens["admin"]) as c:
        assert c.delete("/v1/agents/ada-okafor").status_code == 204

def test_key_limited_to_collections_gets_403_elsewhere(keyed):
    server, tokens = keyed
    with _as(server, tokens["writer-a"]) as c:
        r = c.post("/v1/collections/b/search", json={"query": "kv", "k": 1})
        assert r.status_code == 403 and "limited to the collections a" in r.json()["detail"]
        assert c.get("/v1/collections/b/documents/d").status_code == 403
        assert c.get("/v1/agents").status_code == 403  # names no collection
        r = c.post("/v1/answer", json={"question": "what is paged attention?", "collection": "b"})
        assert r.status_code == 403  # the body's collection counts too
        assert c.get("/v1/collections/a/documents/d").status_code == 200


def test_key_limited_to_collections_lists_only_its_own(keyed):
    server, tokens = keyed
    with _as(server, tokens["writer-a"]) as c:
        r = c.get("/v1/collections")
        assert r.status_code == 200 and [x["name"] for x in r.json()] == ["a"]
    with _as(server, tokens["reader"]) as c:  # an unlimited key sees every collection
        assert {x["name"] for x in c.get("/v1/collections").json()} >= {"a", "b"}


def test_keys_created_and_revoked_over_http_take_effect_at_once(keyed):
    server, tokens = keyed
    with _as(server, tokens["admin"]) as admin:
        r = admin.post("/v1/keys", json={"name": "temp", "scopes": ["read"], "collections": ["a"]})
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["token"].startswith("rsk_") and created["collections"] == ["a"]
        listed = {k["id"]: k for k in admin.get("/v1/keys").json()}
        assert created["id"] in listed and "token" not in listed[created["id"]]
        with _as(server, created["token"]) as c:
            assert c.get("/v1/collections/a").status_code == 200
            assert admin.delete(f"/v1/keys/{created['id']}").json()["revoked_at"] is not None
            assert c.get("/v1/collections/a").status_code == 401
        assert admin.delete("/v1/keys/nosuchkey").status_code == 404
        r = admin.post("/v1/keys", json={"name": "bad", "scopes": ["root"]})
        assert r.status_code == 400
    # every change also lands in the keys file the model server reads
    assert created["id"] in {k.id for k in read_keys_file(server_data_dir(server) / KEYS_FILE)}


def server_data_dir(server: LiveServer) -> Path:
    with _as(server, None) as c:  # the data folder is not exposed over HTTP: read it from the app's settings
        assert c.get("/health").status_code == 200
    return server._server.config.app.state.settings.store.data_dir


def test_untrusted_host_gets_400_before_anything_else(keyed):
    server, tokens = keyed
    port = server.url.rsplit(":", 1)[1]
    with _as(server, tokens["admin"]) as c:
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "localhostx"):
            r = c.get("/v1/collections", headers={"Host": host})
            assert r.status_code == 400, host
            assert r.json()["error"] == "untrusted_host" and r.headers["x-request-id"]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "LOCALHOST", f"[::1]:{port}"):
            assert c.get("/v1/collections", headers={"Host": host}).status_code == 200, host


def test_http_1_0_without_a_host_header_is_answered(keyed):
    """HTTP/1.0 has no Host header to check (a browser always sends one, so no rebinding); HTTP/1.1 must."""
    server, _ = keyed
    assert raw_exchange(server.url, b"GET /health HTTP/1.0\r\n\r\n")[0] == 200
    assert raw_exchange(server.url, b"GET /health HTTP/1.0\r\nHost: evil.example\r\n\r\n")[0] == 400
    assert raw_exchange(server.url, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")[0] == 400


def test_allowed_hosts_setting_admits_a_name(tmp_path):
    server = _start(make_settings(tmp_path / "data", allowed_hosts=["rag.internal"]))
    try:
        with _as(server, None) as c:
            assert c.get("/health", headers={"Host": "rag.internal:8000"}).status_code == 200
            assert c.get("/health", headers={"Host": "other.internal"}).status_code == 400
    finally:
        server.stop()


def test_rate_limit_answers_429_with_retry_after(tmp_path):
    # 0.001 tokens/s: nothing refills during the test, so the 4th request is refused however slow the box is
    server = _start(make_settings(tmp_path / "data", rate_limit_per_s=0.001, rate_limit_burst=3))
    try:
        with _as(server, None) as c:
            assert [c.get("/v1/collections").status_code for _ in range(3)] == [200, 200, 200]
            r = c.get("/v1/collections")
            assert r.status_code == 429 and r.json()["error"] == "rate_limited"
            assert int(r.headers["retry-after"]) >= 1
            assert c.get("/health").status_code == 200  # public routes are not counted
    finally:
        server.stop()


def test_rate_limit_is_per_key(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    tokens = _store_keys(data_dir, ("one", ["read"], []), ("two", ["read"], []))
    server = _start(make_settings(data_dir, rate_limit_per_s=0.001, rate_limit_burst=2))
    try:
        with _as(server, tokens["one"]) as one, _as(server, tokens["two"]) as two:
            assert [one.get("/v1/collections").status_code for _ in range(3)] == [200, 200, 429]
            assert two.get("/v1/collections").status_code == 200
    finally:
        server.stop()


def test_no_keys_beyond_loopback_answers_401(tmp_path):
    # a server configured for 0.0.0.0 (here still listening on 127.0.0.1) with no key: closed, not open
    server = _start(make_settings(tmp_path / "data", host="0.0.0.0"))
    try:
        with _as(server, None) as c:
            r = c.get("/v1/collections")
            assert r.status_code == 401 and "ragsvc keys create" in r.json()["detail"]
    finally:
        server.stop()
    server = _start(make_settings(tmp_path / "data", host="0.0.0.0", insecure=True))
    try:
        with _as(server, None) as c:
            assert c.get("/v1/collections").status_code == 200
    finally:
        server.stop()


def test_serve_refuses_a_public_address_without_keys(tmp_path):
    from ragsvc.cli import app

    data_dir = tmp_path / "data"
    for command in (["serve"], ["serve-model"]):
        result = runner.invoke(app, [*command, "--host", "0.0.0.0", "--data-dir", str(data_dir)])
        assert result.exit_code == 2, result.output
        assert "refusing to serve on 0.0.0.0 without API keys" in result.output


def test_keys_cli_create_list_revoke(tmp_path):
    from ragsvc.cli import app

    data_dir = tmp_path / "data"
    none = runner.invoke(app, ["keys", "list", "--data-dir", str(data_dir)]).output
    assert none.startswith("no API keys; create one with `ragsvc keys create NAME`")
    result = runner.invoke(app, ["keys", "create", "ci", "--scope", "write", "--collection", "a",
                                 "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "note: no collection 'a' exists yet" in result.stderr  # made before its collection: allowed, said
    token = result.stdout.strip().splitlines()[-1]
    key_id = token.split("_")[1]
    listed = runner.invoke(app, ["keys", "list", "--data-dir", str(data_dir)]).output
    assert key_id in listed and "write" in listed and "active" in listed and token not in listed
    header, row = listed.splitlines()
    assert header.split() == ["id", "name", "scopes", "collections", "created", "state"]
    assert row.index("write") == header.index("scopes") and row.split()[3] == "a"  # columns line up
    assert runner.invoke(app, ["keys", "revoke", key_id, "--data-dir", str(data_dir)]).exit_code == 0
    assert "revoked" in runner.invoke(app, ["keys", "list", "--data-dir", str(data_dir)]).output
    assert runner.invoke(app, ["keys", "revoke", "nope", "--data-dir", str(data_dir)]).exit_code == 2
    bad = runner.invoke(app, ["keys", "create", "x", "--scope", "root", "--data-dir", str(data_dir)])
    assert bad.exit_code == 2 and "scopes must be" in bad.output
    never = runner.invoke(app, ["keys", "create", "x", "--collection", "a b", "--data-dir", str(data_dir)])
    assert never.exit_code == 2 and "'a b' cannot be a collection's name" in never.output
    (stored,) = read_keys_file(data_dir / KEYS_FILE)
    assert stored.id == key_id and not stored.active
    assert token.split("_", 2)[2] not in (data_dir / KEYS_FILE).read_text()  # the secret is never stored


def test_repo_jobs_need_admin(keyed, tmp_path):
    server, tokens = keyed
    with _as(server, tokens["writer-a"]) as c:
        r = c.post("/v1/repos", json={"path": str(tmp_path), "collection": "a"})
        assert r.status_code == 403


@pytest.mark.slow
def test_model_server_takes_the_same_keys(tmp_path):
    """`serve-model` reads the keys file beside the catalog: same keys, and a revocation reaches it."""
    from ragsvc.api.model_app import create_model_app, serve_in_thread
    from ragsvc.config import Settings, StoreSettings
    from tests.llm.conftest import engine_config

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    tokens = _store_keys(data_dir, ("reader", ["read"], []), ("gone", ["read"], []))
    catalog = Catalog(data_dir / CATALOG_FILE)
    try:
        catalog.api_keys().revoke(tokens["gone"].split("_")[1])
        settings = Settings(store=StoreSettings(data_dir=data_dir))
        with serve_in_thread(create_model_app(engine_config(), settings=settings)) as url, \
                httpx.Client(base_url=url, timeout=120) as c:
            body = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
            assert c.get("/v1/models").status_code == 401
            r = c.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {tokens['gone']}"})
            assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
            assert r.json()["error"]["type"] == "authentication_error"  # the request's fault, not server_error
            ok = {"Authorization": f"Bearer {tokens['reader']}"}
            assert c.get("/v1/models", headers=ok).status_code == 200
            assert c.get("/health").status_code == 200
            catalog.api_keys().revoke(tokens["reader"].split("_")[1])  # rewrites the keys file
            # the server rereads the file when it changes (it looks once a second): wait for the 401, bounded
            deadline = time.monotonic() + 30
            while c.get("/v1/models", headers=ok).status_code != 401:
                assert time.monotonic() < deadline, "the revocation never reached the model server"
    finally:
        catalog.close()


def test_the_model_servers_keys_file_fails_closed(tmp_path):
    """A damaged keys file answers 503 to everyone (never opens the server); a repaired one is read again."""
    from ragsvc.api.auth import FileKeys
    from ragsvc.errors import NotReady
    from ragsvc.store.keys import write_keys_file

    now = [0.0]
    path = tmp_path / KEYS_FILE
    keys = FileKeys(path, clock=lambda: now[0])
    assert list(keys.keys()) == []  # no file: no keys (open only on loopback)
    new = mint_key("m", ["read"])
    write_keys_file(path, [new.record])
    assert list(keys.keys()) == []  # looked less than a second ago
    now[0] = 1.0
    assert [k.id for k in keys.keys() or ()] == [new.record.id]
    path.write_text("{not json")
    now[0] = 2.0
    with pytest.raises(NotReady):
        keys.keys()
    write_keys_file(path, [new.record])
    assert [k.id for k in keys.keys() or ()] == [new.record.id]


def test_a_body_without_a_valid_key_is_refused_before_it_is_read(keyed):
    """The 401 comes back with 16 MB of the body still unsent: a client without a key cannot make the server read
    or parse a body (the JSON guard and FastAPI would hold the event loop for up to a second on one that size)."""
    from tests.api.test_model_bounds import _connect, _read_response, _request_head

    server, tokens = keyed
    for token in (None, "rsk_nope_nope", tokens["gone"]):
        headers = {"Content-Length": str(16 << 20)} | ({"Authorization": f"Bearer {token}"} if token else {})
        with _connect(server.url) as sock:
            sock.sendall(_request_head("/v1/collections", headers) + b'{"name": "')
            status, body = _read_response(sock)
        assert status == 401 and json.loads(body)["error"] == "unauthorized", body
    with _as(server, tokens["reader"]) as c:  # a valid key: the body is read, and the route's own rule answers
        assert c.post("/v1/collections", json={"name": "early"}).status_code == 403
