"""Server-sent events from work that runs in a worker thread (an answer, a chat reply): the thread emits
events as it goes and returns the final one; the event loop only relays them.

Once the stream has begun the 200 status line is out, so a failure can only be reported in-band: an
`error` event with the JSON error shape and the status it would have had; a 5xx adds the request id its log
line has (`{error, detail, status, request_id}`), and an unexpected failure's own message stays in the log.
A client that goes away sets a flag; the next event the worker emits raises `cancelled` inside the worker,
which unwinds it (and whatever it would have written) instead of generating for no one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from ragsvc.api.request_id import current_request_id
from ragsvc.errors import RagsvcError

logger = logging.getLogger(__name__)

Emit = Callable[[str, Any], None]
"""emit(kind, data): send one event; raises the stream's `cancelled` once the client has gone."""


def event_line(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


async def events_from_thread(work: Callable[[Emit], tuple[str, Any]], *,
                             cancelled: type[Exception]) -> AsyncIterator[str]:
    """Run `work(emit)` in the default executor and yield its events, then its returned (kind, data)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()
    stop = threading.Event()
    rid = current_request_id.get()  # the worker thread does not inherit the request's context

    def put(item: tuple[str, Any] | None) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def emit(kind: str, data: Any) -> None:
        if stop.is_set():
            raise cancelled
        put((kind, data))

    def run() -> None:
        try:
            put(work(emit))
        except cancelled:
            pass
        except RagsvcError as exc:
            body = {"error": exc.code, "detail": exc.message, "status": exc.status_code}
            if exc.status_code >= 500:
                logger.error("request %s: a streamed request failed: %s", rid, exc.message)
                body["request_id"] = rid
            put(("error", body))
        except Exception:
            logger.exception("request %s: a streamed request failed", rid)
            put(("error", {"error": "internal_error", "status": 500, "request_id": rid,
                           "detail": f"unexpected server error; the server log has it under request id {rid}"}))
        finally:
            put(None)

    worker = loop.run_in_executor(None, run)
    try:
        while (item := await queue.get()) is not None:
            yield event_line(*item)
    finally:
        stop.set()
        await worker
