"""AsyncLLMEngine: the engine behind asyncio, for the HTTP layer.

Steps run in one background thread (torch releases the GIL in its kernels, so the event loop stays
responsive); each request gets an asyncio.Queue fed with its RequestOutputs via call_soon_threadsafe.
If the consumer stops iterating (client disconnect -> CancelledError / GeneratorExit), the request is
aborted and its KV blocks are freed at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator

from ragsvc.errors import NotReady
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.outputs import RequestOutput
from ragsvc.serving.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


class AsyncLLMEngine:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._queues: dict[str, asyncio.Queue[RequestOutput | BaseException]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="llm-engine", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        self._wake.set()
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        for rid, q in list(self._queues.items()):
            q.put_nowait(NotReady("the model engine stopped before this request finished; retry"))
            self.engine.abort(rid)

    async def generate(
        self, request_id: str, prompt: str | list[int], params: SamplingParams
    ) -> AsyncGenerator[RequestOutput, None]:
        """Yield this request's outputs as they come; the last one has finished=True."""
        if self._thread is None:
            raise NotReady("the model engine is not started; call start() first")
        queue: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()
        self._queues[request_id] = queue
        try:
            self.engine.add_request(request_id, prompt, params)  # raises InvalidInput before anything runs
        except BaseException:
            del self._queues[request_id]
            raise
        self._wake.set()
        finished = False
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            self._queues.pop(request_id, None)
            if not finished:
                self.engine.abort(request_id)  # consumer went away: free the blocks now

    def _run(self) -> None:
        while not self._stopping.is_set():
            if not self.engine.has_unfinished():
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                outputs = self.engine.step()
            except Exception as exc:  # keep serving others; fail the requests in flight
                logger.exception("engine step failed")
                self._fail_all(exc)
                continue
            if outputs and self._loop is not None:
                self._loop.call_soon_threadsafe(self._deliver, outputs)

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            queue = self._queues.get(out.request_id)
            if queue is not None:
                queue.put_nowait(out)

    def _fail_all(self, exc: Exception) -> None:
        for rid in list(self._queues):
            self.engine.abort(rid)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._fail_queues, list(self._queues.values()), exc)

    @staticmethod
    def _fail_queues(queues: list[asyncio.Queue[RequestOutput | BaseException]], exc: Exception) -> None:
        for queue in queues:
            queue.put_nowait(exc)
