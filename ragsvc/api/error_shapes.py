"""The two error shapes, and which one a request gets when the answer is made outside any route.

ragsvc's own routes answer `{error, detail}` (5xx: plus `request_id`); the OpenAI-compatible routes answer
OpenAI's `{error: {message, type, param, code}}`, which OpenAI's clients parse into their exceptions. The
routes pick their shape themselves; the middlewares in front of them (trusted hosts, the body limit, the JSON
guard, the last-resort 500) know only the path, so they ask `error_payload`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BEARER_CHALLENGE = 'Bearer realm="ragsvc"'
"""The `WWW-Authenticate` value every 401 carries, from a route or from the edge."""
OPENAI_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models")
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                 429: "rate_limit_error", 503: "service_unavailable"}
"""OpenAI clients raise by status; the type names the class of failure for those that read it. Other 4xx are
the request's fault (invalid_request_error), other 5xx the server's."""


def openai_error_type(status: int) -> str:
    return _OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")


def is_openai_route(scope: Mapping[str, Any]) -> bool:
    """Whether the request's path is one of the OpenAI-compatible routes (behind a mount's root path too), or
    any path under /v1/ on an app that serves only those (the model server sets `state.openai_v1`): an OpenAI
    client asking it for a route it lacks, /v1/embeddings say, reads the 404 in OpenAI's shape."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root):
        path = path[len(root):]
    if path.startswith("/v1/") and getattr(getattr(scope.get("app"), "state", None), "openai_v1", False):
        return True
    return path in OPENAI_ROUTES or path.startswith("/v1/models/")


def error_body(code: str, detail: object, request_id: str | None = None) -> dict[str, object]:
    """ragsvc's `{error, detail}`, plus `request_id` when given (5xx: the id the server log has the failure under;
    every response carries it in the X-Request-ID header as well)."""
    body: dict[str, object] = {"error": code, "detail": detail}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def openai_error_body(status: int, message: str, *, param: str | None = None, code: str | None = None,
                      request_id: str | None = None) -> dict[str, object]:
    """OpenAI's `{"error": {message, type, param, code}}`; a 5xx adds `request_id` beside `error` (as in the
    API's own shape), where OpenAI clients, which read only `error`, pass over it."""
    body: dict[str, object] = {"error": {"message": message, "type": openai_error_type(status), "param": param,
                                         "code": code}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def error_payload(scope: Mapping[str, Any], status: int, code: str, detail: object,
                  request_id: str | None = None) -> dict[str, object]:
    """The body of an error answered outside the routes (or by the router itself: a 404 or 405), in the shape
    the request's route would have used."""
    if is_openai_route(scope):
        return openai_error_body(status, str(detail), code=code, request_id=request_id)
    return error_body(code, detail, request_id)
