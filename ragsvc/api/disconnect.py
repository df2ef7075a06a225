"""Work for a plain (non-streaming) request that stops when its client goes away.

A streaming response learns of a disconnect when its next write fails; a plain one learns nothing until it
answers, so a client that gave up would leave the engine generating for no one. `unless_gone` watches the
connection while the work runs: on a disconnect it sets the work's `gone` flag, which the work checks at
its next step (an answer's next event, a reply's next piece of text) and stops by raising, and then waits
for the work to unwind, so a session's next message never starts while this one is still writing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")

CLIENT_CLOSED = 499
"""The status logged for a request whose client hung up first (nginx's convention); nobody reads it."""


async def until_disconnect(request: Request) -> None:
    """Return once the client has hung up. The body has been read, so the next ASGI message is the
    disconnect (what StreamingResponse listens for)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_gone(request: Request, work: Awaitable[T], gone: threading.Event,
                      cancelled: type[BaseException]) -> T | None:
    """`work`'s result, or None if the client hung up before it finished (then `gone` is set and `work`,
    which raises `cancelled` once it sees the flag, has been awaited to its end)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(until_disconnect(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if task.done():
        return task.result()
    gone.set()
    try:
        return await task  # finished anyway: nobody reads it, but it was not wasted
    except cancelled:
        return None
