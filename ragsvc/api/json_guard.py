"""The one body rule at the edge: a request body is JSON, declared as such, sent uncompressed, UTF-8, and holds no
lone UTF-16 surrogates and no NaN / Infinity.

Python's JSON parser accepts both of the latter: `"\\ud800"` becomes a str that no UTF-8 encoder (duckdb,
tokenizers, the response writer) can encode, and `NaN`, `Infinity` or `1e999` become floats that JSON cannot
carry back and that poison scores, metadata and sampling. Checking here covers every route of both apps,
present and future, in one place, and the 400 names the field (`body.documents.0.metadata.x`).

Only bodies that could hold such a value are parsed here: a byte pattern (an escaped surrogate, the words
NaN / Infinity, a three-digit exponent, a 300-digit number) selects them, so a normal ingest pays one scan; a
body parsed here and let through reaches the route as that document, not parsed again (parsed_body.py).
So are bodies with enough brackets to nest deeper than Python's parser goes (its recursion limit), and
integers longer than Python converts (`sys.get_int_max_str_digits()`, 4,300 digits by default), both of which
the route's own parsing would refuse with a bare "error parsing the body": here the 400 says why. All of this
runs on the event loop, so the checks of a parsed body are C's where they can be (the parser's hook for NaN /
Infinity literals, the encoder for strings and floats), and values are walked in Python only to name the field
of a body being refused, a bounded number of them.

A body under any other Content-Type (or none) gets 415 saying which header to send. FastAPI would answer it
with "Input should be a valid dictionary" (and versions before 0.132 parsed an undeclared body as JSON, which
let any web page make a no-CORS `fetch` write to a keyless server on loopback: a browser sends such a request
without asking first only when its Content-Type is absent, a form or text/plain). A Content-Encoding other
than identity gets 415 too: bodies are read as they come, and were never decompressed.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from typing import Any

from ragsvc.api.auth import unauthenticated
from ragsvc.api.error_shapes import BEARER_CHALLENGE, error_payload
from ragsvc.api.parsed_body import hand_over
from ragsvc.api.request_id import ASGIApp, Message, Receive, Scope, Send, send_json

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_EXPONENT_MASK = bytes(0x64 if 0x30 <= b <= 0x39 else 0x65 if b in b"eE" else 0x2B if b == 0x2B else 0x2E
                       for b in range(256))
"""`body.translate(_EXPONENT_MASK)` reads d for a digit, e for e or E, + for itself and . for anything else, so a
three-digit exponent ([0-9][eE]+?[0-9]{3}) is one of two substrings. The regex it replaces tried a match at every
digit: 0.44 s for a 16 MB body of digits, on the event loop (the searches here: about 0.1 s)."""
_LONG_DIGITS = 300
"""A number this long may be out of float range or past Python's integer digit limit: parse the body here."""
_DIGIT_MASK = bytes(0x31 if 0x30 <= b <= 0x39 else 0x30 for b in range(256))
"""`body.translate(_DIGIT_MASK)` has b"1" where the body has a digit, so a run of n digits is one substring search.
A regex for n digits starts again at every digit of every shorter run: quadratic, and the guard runs on the event
loop (a 16 MB body of 4,300-digit runs ending in a longer one would hold it for about 90 s)."""
_MAX_REPORTED = 200
_MAX_NAMED_VALUES = 100_000
"""Values read, in Python and on the event loop, to name the field of a refused body; past them the 400 says what
is wrong but not where (a 15 MB body holds millions of values: walking them all took 2-6 s)."""
_RENAMED_BYTES = 1 << 20
"""A body refused for a NaN / Infinity literal is parsed a second time, to name the field, up to this size."""
_DEEP_BRACKETS = 500
"""Bodies with this many brackets are parsed here: they may nest deeper than Python's JSON parser reads (it
recurses once a level and stops near the recursion limit, fewer levels the deeper the caller's stack)."""


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored or sent back as UTF-8, or None."""
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"holds a lone UTF-16 surrogate at character {exc.start}; send valid Unicode text"
    return None


def find_problem(document: Any, *, max_values: int | None = None) -> str | None:
    """`where: what` for the first lone surrogate or non-finite number in a parsed JSON document (in document
    order), else None (also when `max_values` values were read without finding one). A value's path is spelt
    out only for the one reported: spelling every path cost more than the checks (3 s for 5M list items)."""
    if (why := _value_problem(document)) is not None:
        return f"body: {why}"
    stack: list[Iterator[tuple[Any, Any]]] = [_children(document)]
    keys: list[Any] = []  # keys[i] leads from the container read by stack[i] to the one read by stack[i + 1]
    read = 0
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            if keys:
                keys.pop()
            continue
        key, value = item
        read += 1
        if max_values is not None and read > max_values:
            return None
        if isinstance(key, str) and (why := text_problem(key)) is not None:
            return f"{_path(keys)[:_MAX_REPORTED]}: a key {why}"
        if (why := _value_problem(value)) is not None:
            return f"{_path([*keys, key])[:_MAX_REPORTED]}: {why}"
        if isinstance(value, dict | list):
            keys.append(key)
            stack.append(_children(value))
    return None


def _children(value: Any) -> Iterator[tuple[Any, Any]]:
    if isinstance(value, dict):
        return iter(value.items())
    if isinstance(value, list):
        return enumerate(value)
    return iter(())


def _value_problem(value: Any) -> str | None:
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, float) and not math.isfinite(value):
        return f"numbers must be finite (JSON has no NaN or Infinity); got {value}"
    return None


def _path(keys: list[Any]) -> str:
    return ".".join(["body", *(str(k) for k in keys)])


_TOO_DEEP_TO_CHECK = "JSON nested too deeply to check (near the parser's recursion limit); send a flatter document"


def problem_kind(document: Any) -> str | None:
    """What is wrong somewhere in a parsed document, or None: found in C by writing it out as a response would
    be (every string as UTF-8, no NaN or Infinity), so a body that only looked suspect costs no Python walk."""
    try:
        json.dumps(document, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return "a text holds a lone UTF-16 surrogate; send valid Unicode text"
    except ValueError:
        return "numbers must be finite (JSON has no NaN or Infinity)"
    except RecursionError:
        return _TOO_DEEP_TO_CHECK
    return None


class _Constant(Exception):
    """Raised by the parser's hook at the first NaN / Infinity literal (such text inside a string is no literal)."""


def _refuse_constant(name: str) -> float:
    raise _Constant(name)


UNPARSED: Any = object()
"""`inspect_body`'s document when it did not parse the body."""


def body_problem(body: bytes) -> str | None:
    """Why a JSON request body is refused (a 400's detail), or None."""
    return inspect_body(body)[0]


def inspect_body(body: bytes) -> tuple[str | None, Any]:
    """(why the body is refused or None, the document if the checks parsed it, else UNPARSED). A document comes
    back only with no problem: the route can take it instead of parsing the body again (parsed_body.py)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (f"body: not UTF-8 text (byte {exc.start} is {body[exc.start]:#04x}); send JSON encoded as UTF-8",
                UNPARSED)
    deep = body.count(b"[") + body.count(b"{") >= _DEEP_BRACKETS
    # what Python's parser reads without complaint but ragsvc refuses may be there: each test is linear in the
    # body (byte searches, the surrogate regex only where a \u escape is, exponents and digit runs as searches
    # in translated masks)
    surrogates, constants, overflow = _surrogate_escape(body), _constant_words(body), _overflow(body)
    if not (deep or surrogates or constants or overflow):
        return None, UNPARSED
    kind: str | None = None
    try:
        try:
            document = json.loads(body, parse_constant=_refuse_constant)
        except _Constant:
            kind = "numbers must be finite (JSON has no NaN or Infinity)"
            if len(body) > _RENAMED_BYTES:
                return f"body: {kind}", UNPARSED
            document = json.loads(body)  # again, to name the field: the body is refused either way
    except RecursionError:
        return (f"body: JSON nested too deeply to read (the parser stops near {sys.getrecursionlimit()} levels); "
                "send a flatter document"), UNPARSED
    except json.JSONDecodeError:
        return None, UNPARSED  # not JSON: the route's own parsing answers that
    except ValueError:  # parsed as JSON, but a number in it is past what Python converts
        return _long_integer(body), UNPARSED
    if kind is None and (surrogates or overflow):  # a string or a float may be bad: ask the encoder
        kind = problem_kind(document)
    if kind is None:
        return None, document
    if kind == _TOO_DEEP_TO_CHECK:  # read, but too deep for the encoder's check: nothing to name
        return f"body: {kind}", UNPARSED
    return find_problem(document, max_values=_MAX_NAMED_VALUES) or (
        f"body: {kind} (in a value past the first {_MAX_NAMED_VALUES:,} of the document)"), UNPARSED


def _surrogate_escape(body: bytes) -> bool:
    return b"\\u" in body and _SURROGATE_ESCAPE.search(body) is not None


def _constant_words(body: bytes) -> bool:
    return b"NaN" in body or b"Infinity" in body


def _overflow(body: bytes) -> bool:
    """A number that may be out of float range: a three-digit exponent or a long run of digits."""
    return _big_exponent(body) or _digit_run(body, _LONG_DIGITS) is not None


def _big_exponent(body: bytes) -> bool:
    classes = body.translate(_EXPONENT_MASK)
    # memchr finds an e (or its absence) at once; the two patterns end in digits, which a digit-heavy body is
    # full of, so their search steps a byte at a time there
    return b"e" in classes and (b"deddd" in classes or b"de+ddd" in classes)


def _digit_run(body: bytes, length: int) -> tuple[int, int] | None:
    """(start, length) of the first run of at least `length` digits in `body`, or None."""
    mask = body.translate(_DIGIT_MASK)
    start = mask.find(b"1" * length)
    if start < 0:
        return None
    end = mask.find(b"0", start)
    return start, (len(mask) if end < 0 else end) - start


def _long_integer(body: bytes) -> str | None:
    """The 400 for a body whose integer is longer than Python converts (None if no such run of digits is found)."""
    limit = sys.get_int_max_str_digits()
    if not limit:  # 0: no limit, so that is not why the parse failed
        return None
    found = _digit_run(body, limit + 1)
    if found is None:
        return None
    start, digits = found
    return (f"body: a number at byte {start} has {digits} digits; JSON numbers are read up to {limit} digits here. "
            "Send a value that long as a string")


def _header(scope: Scope, name: bytes) -> str | None:
    value = next((v for k, v in scope.get("headers", []) if k == name), None)
    return None if value is None else value.decode("latin-1").strip()


def is_json_type(content_type: str) -> bool:
    """application/json, or a JSON-based type such as application/merge-patch+json, parameters aside."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def media_type_problem(scope: Scope) -> str | None:
    """Why a request with a non-empty body is not taken as JSON (for a 415), or None."""
    encoding = _header(scope, b"content-encoding")
    if encoding and encoding.lower() != "identity":
        return (f"body: Content-Encoding {encoding[:_MAX_REPORTED]!r} is not accepted; send the body uncompressed "
                "(no Content-Encoding header)")
    declared = _header(scope, b"content-type")
    if declared is not None and is_json_type(declared):
        return None
    said = "has no Content-Type" if not declared else f"says Content-Type {declared[:_MAX_REPORTED]!r}"
    hint = (" (what curl -d sends unless told otherwise)"
            if declared and declared.lower().startswith("application/x-www-form-urlencoded") else "")
    return f"body: send JSON with the header Content-Type: application/json; this request {said}{hint}"


_CHALLENGE = [(b"www-authenticate", BEARER_CHALLENGE.encode("ascii"))]


class JsonGuardMiddleware:
    """Buffers request bodies (the body limit, outside this, bounds them) and refuses the ones above: 415 for a
    body that is not declared JSON, 400 for what a JSON body must not hold. A request that `authorize` would
    refuse with 401 on any route gets that 401 first, with its body unread."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        edge = getattr(getattr(scope.get("app"), "state", None), "edge", None)
        if edge is not None and (why := unauthenticated(edge, _header(scope, b"authorization") or "")) is not None:
            # every route that takes a body needs a key: refuse before reading (and parsing) up to 16 MiB of it
            await send_json(send, 401, error_payload(scope, 401, "unauthorized", why), headers=_CHALLENGE)
            return
        chunks: list[bytes] = []
        gone: Message | None = None
        while True:
            message = await receive()
            if message["type"] != "http.request":
                gone = message  # the client went away: the app sees that after what did arrive
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and (problem := media_type_problem(scope)) is not None:  # an empty body has no type to declare
            await send_json(send, 415, error_payload(scope, 415, "unsupported_media_type", problem))
            return
        problem, document = inspect_body(body)
        if problem is not None:
            await send_json(send, 400, error_payload(scope, 400, "invalid_input", problem))
            return
        if document is not UNPARSED:
            hand_over(scope, document)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": gone is not None}
            return gone if gone is not None else await receive()

        await self.app(scope, replay, send)
