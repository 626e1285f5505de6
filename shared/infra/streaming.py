"""A response body written by a producer (a database export) as fast as the client reads it.

`produced(produce)` runs `produce(emit)` as a task of its own and hands each chunk it emits
through a bounded queue to the response: when the client reads slowly, `emit` waits, so the
producer (and behind it the database) waits too, and memory stays bounded by the queue's depth
whatever the export's size. The producer owns its resources (a pooled connection) in its own
task: when the response ends early — the client went away, or the server stops — the task is
cancelled and awaited, so its connection is back in the pool before the response is done.
`StreamedResponse` makes sure the body is closed however the response ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Send

log = logging.getLogger(__name__)

Emit = Callable[[bytes], Coroutine[Any, Any, None]]
Producer = Callable[[Emit], Coroutine[Any, Any, None]]

#: Chunks in flight between the producer and the response (each is what the producer emits at
#: once: for PostgreSQL's COPY, what one read of its socket returned).
DEFAULT_DEPTH: Final = 8


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


_END: Final = object()


async def produced(produce: Producer, *, depth: int = DEFAULT_DEPTH) -> AsyncGenerator[bytes, None]:
    """The chunks `produce` emits, in order; its error, if it fails, is raised after the chunks
    emitted before it (the response then ends short of its end: the client sees it cut)."""
    queue: asyncio.Queue[object] = asyncio.Queue(depth)

    async def run() -> None:
        try:
            await produce(queue.put)
        except Exception as error:
            await queue.put(_Failed(error))
        else:
            await queue.put(_END)

    task = asyncio.create_task(run(), name="response producer")
    try:
        while True:
            chunk = await queue.get()
            if chunk is _END:
                return
            if isinstance(chunk, _Failed):
                log.error("a streamed response failed", exc_info=chunk.error)
                raise chunk.error
            assert isinstance(chunk, bytes)
            yield chunk
    finally:
        task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.gather(task, return_exceptions=True)


class StreamedResponse(StreamingResponse):
    """A StreamingResponse that closes its body iterator when it ends, however it ends (Starlette
    leaves an abandoned iterator to the garbage collector), so what the body holds is released
    before the request is done."""

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()
