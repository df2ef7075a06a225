"""Serve the web console (ragsvc.web): the page at `/`, its scripts and styles under `/console/`.

Both are public, so the page can load before the user has entered an API key; every API call the page makes
then carries the key through `authorize` like any other client's. The page is sent with a Content-Security-
Policy that allows only this origin: it loads no third-party code, and none can be injected into it.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from ragsvc.api.auth import PUBLIC, requires
from ragsvc.web import INDEX_FILE, STATIC_DIR

CONSOLE_PREFIX = "/console"
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                           "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def install_console(app: FastAPI) -> None:
    """Add GET / (the page) and mount the static files; left out of the OpenAPI document, which lists the API."""

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False, openapi_extra=requires(PUBLIC))
    def console_page() -> FileResponse:
        return FileResponse(INDEX_FILE, media_type="text/html", headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    app.mount(CONSOLE_PREFIX, StaticFiles(directory=STATIC_DIR), name="console")
