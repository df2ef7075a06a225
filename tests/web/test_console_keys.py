"""With API keys on, the console asks for one on the first 401, keeps it for the tab only (sessionStorage), and
shows the API's own message for a wrong key or a missing scope."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.slow
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect


@pytest.fixture(scope="module")
def keys(plain_server) -> dict[str, str]:
    """An admin and a read-only key; creating the first turns keys on for the rest of the session's server."""
    with httpx.Client(base_url=plain_server.url, timeout=60) as client:
        admin = client.post("/v1/keys", json={"name": "console admin", "scopes": ["admin"]})
        admin.raise_for_status()
        headers = {"Authorization": f"Bearer {admin.json()['token']}"}
        reader = client.post("/v1/keys", json={"name": "console reader", "scopes": ["read"]}, headers=headers)
        reader.raise_for_status()
        assert client.get("/v1/collections").status_code == 401
    return {"admin": admin.json()["token"], "read": reader.json()["token"]}


def enter_key(tab, key: str) -> None:
    dialog = tab.locator("#key-dialog")
    expect(dialog).to_be_visible()
    dialog.locator("[name=key]").fill(key)
    dialog.locator("[name=key]").press("Enter")


def test_the_page_asks_for_a_key_and_keeps_it_for_the_tab_only(browser, plain_server, keys):
    context = browser.new_context()
    try:
        tab = context.new_page()
        tab.goto(plain_server.url + "/")  # the page itself loads without a key
        expect(tab.locator("#key-reason")).to_contain_text("this server needs an API key")
        enter_key(tab, "rsk_wrong_key")
        expect(tab.locator("#key-reason")).to_contain_text("the API key is not valid")
        enter_key(tab, keys["admin"])
        expect(tab.locator("#collections-table tr[data-name=sample]")).to_be_visible()
        assert tab.evaluate("sessionStorage.getItem('ragsvc.apiKey')") == keys["admin"]
        assert tab.evaluate("localStorage.length") == 0 and context.cookies() == []
        tab.reload()  # the same tab keeps it: no prompt
        expect(tab.locator("#collections-table tr[data-name=sample]")).to_be_visible()
        expect(tab.locator("#key-dialog")).to_be_hidden()
        other = context.new_page()  # another tab starts without it
        other.goto(plain_server.url + "/")
        expect(other.locator("#key-dialog")).to_be_visible()
        other.click("#key-cancel")
        expect(other.locator("#collections-error")).to_contain_text("this server needs an API key")
    finally:
        context.close()


def test_a_key_without_the_scope_gets_the_apis_message(browser, plain_server, keys):
    context = browser.new_context()
    try:
        tab = context.new_page()
        tab.goto(plain_server.url + "/")
        enter_key(tab, keys["read"])
        expect(tab.locator("#collections-table tr[data-name=sample]")).to_be_visible()
        tab.fill("#create-form [name=name]", "not-allowed")
        tab.press("#create-form [name=name]", "Enter")
        expect(tab.locator("#create-error")).to_contain_text("needs admin")
        expect(tab.locator("#create-error")).to_contain_text("HTTP 403")
        tab.locator("#collections-table tr[data-name=sample]").get_by_role("button", name="Delete sample").click()
        tab.click("#confirm-yes")
        expect(tab.locator("#collections-error")).to_contain_text("HTTP 403")
        expect(tab.locator("#collections-table tr[data-name=sample]")).to_be_visible()
    finally:
        context.close()
    assert httpx.get(plain_server.url + "/v1/collections/sample",
                     headers={"Authorization": f"Bearer {keys['admin']}"}).status_code == 200
