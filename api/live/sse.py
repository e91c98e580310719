"""The HTTP side of an event stream: sends what the hub gives it, and ends it when it must.

FastAPI's own SSE (a generator endpoint) encodes messages and sends keep-alives, but it
cannot end a stream whose client stopped reading: the generator then waits inside a send
that never returns. This response runs the sending beside watchers that can cancel it.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

import anyio
from fastapi.sse import format_sse_event
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.live.hub import STREAMS_DROPPED, EventHub
from shared.db.events import StreamFilter, StreamPosition
from shared.domain.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

# How long an EventSource waits before reconnecting after the connection drops.
RECONNECT_MS = 2000
# Where ExposeTransport leaves the server's transport for this request, if it found one.
TRANSPORT = "taskq.transport"


class ExposeTransport:
    """Outermost wrapper of the app: notes the connection's transport in the scope.

    ASGI has no way to abort a connection. A stream dropped for being too slow ends its
    response unfinished, and the server then closes the connection gracefully, after the
    megabytes still queued for a client that reads nothing: its socket would stay open
    for as long as that client does. uvicorn's `send` is a method of the request cycle,
    which holds the transport; with it, the stream can abort. Any other server: no
    transport, and the graceful close.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if scope["type"] == "http" and transport is not None:
            scope[TRANSPORT] = transport
        await self.app(scope, receive, send)


class EventStream(StreamingResponse):
    """A stream of the hub's events for one client, checked every `recheck_s` against
    `still_valid` (its key or session).

    Not a subclass of FastAPI's EventSourceResponse: FastAPI takes a route declaring that
    one for a generator endpoint, which this is not.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        hub: EventHub,
        wanted: StreamFilter,
        after: StreamPosition | None,
        *,
        still_valid: Callable[[], Awaitable[bool]],
        recheck_s: float,
    ) -> None:
        super().__init__(
            content=iter(()), media_type=self.media_type, headers={"X-Accel-Buffering": "no"}
        )
        self.headers["Cache-Control"] = "no-cache"
        self._hub = hub
        self._wanted = wanted
        self._after = after
        self._still_valid = still_valid
        self._recheck_s = recheck_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        dropped = asyncio.Event()
        chunks = self._hub.stream(self._wanted, self._after, dropped)
        ended = False  # True: end the response properly (the client is still reading)
        try:
            async with anyio.create_task_group() as group:

                async def then_stop(watch: Callable[[], Awaitable[bool]]) -> None:
                    nonlocal ended
                    ended = await watch()
                    group.cancel_scope.cancel()

                group.start_soon(then_stop, lambda: self._client_left(receive))
                group.start_soon(then_stop, lambda: self._too_slow(dropped, scope))
                group.start_soon(then_stop, self._credential_ended)
                await send(self._start())
                await send(_body(format_sse_event(retry=RECONNECT_MS)))
                try:
                    async for chunk in chunks:
                        await send(_body(chunk))
                except DatabaseUnavailable:
                    # A resuming stream's backlog read failed: end it properly; the client
                    # comes back with its Last-Event-ID.
                    ended = True
                    group.cancel_scope.cancel()
        finally:
            await chunks.aclose()
        if ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _start(self) -> dict[str, object]:
        return {"type": "http.response.start", "status": 200, "headers": self.raw_headers}

    async def _client_left(self, receive: Receive) -> bool:
        while (await receive())["type"] != "http.disconnect":
            pass
        return False

    async def _too_slow(self, dropped: asyncio.Event, scope: Scope) -> bool:
        await dropped.wait()
        STREAMS_DROPPED.labels("too_slow").inc()
        log.warning("event stream dropped: the client fell too far behind")
        transport = scope.get(TRANSPORT)
        if transport is not None:
            transport.abort()  # now, with whatever was still queued for it
        return False  # no last chunk: it would wait on the same full buffer

    async def _credential_ended(self) -> bool:
        while True:
            await asyncio.sleep(self._recheck_s)
            if not await self._still_valid():
                STREAMS_DROPPED.labels("credential_ended").inc()
                return True


def _body(chunk: bytes) -> dict[str, object]:
    return {"type": "http.response.body", "body": chunk, "more_body": True}
