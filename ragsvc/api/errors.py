"""One place that turns errors into JSON `{error, detail}` (5xx: `{error, detail, request_id}`) with the right
status, and documents them.

Every error response of every route is listed in the OpenAPI document (`document_errors`), so a client, or a
fuzzer checking conformance, knows the shape of a 4xx before it meets one. The OpenAI-compatible routes answer
with OpenAI's `{error: {message, type, ...}}` instead, which the documented shape admits.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragsvc.api.error_shapes import BEARER_CHALLENGE, error_body, error_payload
from ragsvc.api.rate_limit import retry_after_header
from ragsvc.api.request_id import request_id_of
from ragsvc.api.validation_errors import relevant
from ragsvc.errors import RagsvcError, RateLimited, Unauthorized

logger = logging.getLogger(__name__)

ERROR_STATUSES = {
    "400": "invalid input (the detail names the field), or a Host header this server does not answer to",
    "401": "no API key, or one that is unknown or revoked",
    "403": "the API key lacks the route's scope or the collection",
    "404": "no such resource",
    "405": "method not allowed",
    "409": "conflict: the resource exists or is held by another process",
    "413": "request body, batch or document above the configured limit",
    "415": "a body not sent as Content-Type: application/json, or compressed",
    "429": "rate limit: retry after the Retry-After header's seconds",
    "500": "unexpected server error; the server log has it under request_id",
    "502": "the model server failed",
    "503": "still loading (indexes, model, keys); retry when GET /health answers 200",
    "504": "the model server did not answer in time",
    "507": "the disk holding the server's data folder is full; the write did not happen",
}
ERROR_SCHEMA: dict[str, Any] = {
    "title": "ErrorBody",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"anyOf": [
            {"type": "string", "description": "a stable code: invalid_input, unauthorized, rate_limited, ..."},
            {"type": "object", "required": ["message"], "description": "OpenAI's error object (model routes)"},
        ]},
        "detail": {"description": "what went wrong and what to send instead"},
        "request_id": {"type": "string", "description": "5xx only; also in every response's X-Request-ID"},
    },
}


def error_headers(exc: RagsvcError) -> dict[str, str]:
    """Headers an error's status calls for: Retry-After with 429, WWW-Authenticate with 401."""
    if isinstance(exc, RateLimited):
        return {"Retry-After": retry_after_header(exc.retry_after_s)}
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": BEARER_CHALLENGE}
    return {}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RagsvcError)
    async def _ragsvc(request: Request, exc: RagsvcError) -> JSONResponse:
        rid = request_id_of(request.scope) if exc.status_code >= 500 else None
        if rid is not None:
            logger.error("request %s: %s %s failed: %s", rid, request.method, request.url.path, exc.message)
        return JSONResponse(error_body(exc.code, exc.message, rid), status_code=exc.status_code,
                            headers=error_headers(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("invalid_input", _describe(exc)), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        # the shape the path's clients read: a GET of /v1/chat/completions answers OpenAI's 405
        body = error_payload(request.scope, exc.status_code, code, exc.detail)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    document_errors(app)


def document_errors(app: FastAPI) -> None:
    """List ERROR_STATUSES with ERROR_SCHEMA on every operation of the app's OpenAPI document (FastAPI's own
    422 goes: validation errors answer 400 here)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("schemas", {})["ErrorBody"] = ERROR_SCHEMA
        schema["components"]["schemas"].pop("HTTPValidationError", None)
        schema["components"]["schemas"].pop("ValidationError", None)
        ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                for status, description in ERROR_STATUSES.items():
                    responses.setdefault(status, {"description": description, "content": ref})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _describe(exc: RequestValidationError) -> str:
    """Pydantic's error list as one readable sentence per problem: `body.k: Input should be ...`."""
    parts = []
    for err in relevant(exc.errors()):
        where = ".".join(str(p) for p in err.get("loc", ()))
        message = err.get("msg", "invalid")
        given = err.get("input")
        if isinstance(given, str | int | float | bool) and err.get("type") not in ("missing", "json_invalid"):
            shown = given[:200] if isinstance(given, str) else given  # not a repr of a 16 MB string for 200 chars
            message += f" (got {repr(shown)[:200]})"
        if err.get("type") == "json_invalid":
            message = "request body is not valid JSON: " + str(err.get("ctx", {}).get("error", message))
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
