"""Server-sent events from work that runs in a worker thread (an answer, a chat reply): the thread emits
events as it goes and returns the final one; the event loop only relays them.

Once the stream has begun the 200 status line is out, so a failure can only be reported in-band: an
`error` event with the JSON error shape and the status it would have had. A client that goes away sets a
flag; the next event the worker emits raises `cancelled` inside the worker, which unwinds it (and whatever
it would have written) instead of generating for no one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

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
            put(("error", {"error": exc.code, "detail": exc.message, "status": exc.status_code}))
        except Exception as exc:
            logger.exception("a streamed request failed")
            put(("error", {"error": "internal_error", "detail": str(exc), "status": 500}))
        finally:
            put(None)

    worker = loop.run_in_executor(None, run)
    try:
        while (item := await queue.get()) is not None:
            yield event_line(*item)
    finally:
        stop.set()
        await worker
