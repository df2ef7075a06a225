"""One place that turns errors into JSON `{error, detail}` with the right status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragsvc.errors import RagsvcError

logger = logging.getLogger(__name__)


def error_body(code: str, detail: object) -> dict[str, object]:
    return {"error": code, "detail": detail}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RagsvcError)
    async def _ragsvc(request: Request, exc: RagsvcError) -> JSONResponse:
        if exc.status_code >= 500:
            logger.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("invalid_input", _describe(exc)), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, exc.detail), status_code=exc.status_code)


def _describe(exc: RequestValidationError) -> str:
    """Pydantic's error list as one readable sentence per problem: `body.k: Input should be ...`."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        message = err.get("msg", "invalid")
        given = err.get("input")
        if isinstance(given, str | int | float | bool) and err.get("type") not in ("missing", "json_invalid"):
            message += f" (got {given!r})"
        if err.get("type") == "json_invalid":
            message = "request body is not valid JSON: " + str(err.get("ctx", {}).get("error", message))
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
