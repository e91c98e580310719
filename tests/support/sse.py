"""Reading a Server-Sent Events stream of a real API process in tests, over httpx.

A background task reads the response line by line and parses it into messages (and
comments, kept apart), so a test can await "the next message within T seconds" without
cancelling a read in the middle of a line.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

EVENTS = "/api/v1/events"


@dataclass(frozen=True)
class Message:
    """One dispatched SSE message, stamped with when the test received it."""

    id: str | None
    event: str | None
    data: str
    received_at: float  # time.time(), comparable with the server's timestamps

    @property
    def json(self) -> dict[str, Any]:
        parsed = json.loads(self.data)
        assert isinstance(parsed, dict), self.data
        return parsed

    @property
    def event_id(self) -> int:
        assert self.id is not None, "a message without an id"
        return int(self.id)


@dataclass(frozen=True)
class Comment:
    text: str
    received_at: float  # time.monotonic()


@dataclass(frozen=True)
class _End:
    error: BaseException | None


@dataclass
class _Block:
    """The fields of the message being read, until its blank line."""

    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)
    retry: int | None = None
    seen: bool = False


class SseStream:
    """The parsed messages of one open `text/event-stream` response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.comments: list[Comment] = []
        self.retry_ms: int | None = None
        self.ended: _End | None = None
        self._items: asyncio.Queue[Message | _End] = asyncio.Queue()
        self._retry_seen = asyncio.Event()
        self._comment_seen = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        block = _Block()
        error: BaseException | None = None
        try:
            async for line in self.response.aiter_lines():
                if line == "":
                    self._dispatch(block)
                    block = _Block()
                elif line.startswith(":"):
                    self.comments.append(Comment(line[1:].strip(), time.monotonic()))
                    self._comment_seen.set()
                else:
                    name, _, value = line.partition(":")
                    self._field(block, name, value.removeprefix(" "))
        except Exception as exc:  # the connection broke: the test decides if that is wrong
            error = exc
        end = _End(error)
        self.ended = end
        self._retry_seen.set()
        self._comment_seen.set()
        await self._items.put(end)

    @staticmethod
    def _field(block: _Block, name: str, value: str) -> None:
        block.seen = True
        if name == "id":
            block.id = value
        elif name == "event":
            block.event = value
        elif name == "data":
            block.data.append(value)
        elif name == "retry" and value.isdigit():
            block.retry = int(value)

    def _dispatch(self, block: _Block) -> None:
        if block.retry is not None:
            self.retry_ms = block.retry
            self._retry_seen.set()
        if block.data:
            message = Message(block.id, block.event, "\n".join(block.data), time.time())
            self._items.put_nowait(message)

    async def opened(self, timeout_s: float = 5.0) -> None:
        """Wait for the stream's first field (`retry:`). The server subscribes the stream in
        the same step as it sends it, so every event written after this reaches it."""
        async with asyncio.timeout(timeout_s):
            await self._retry_seen.wait()
        assert self.retry_ms is not None, f"the stream ended before it began: {self.ended}"

    async def next(self, timeout_s: float = 5.0) -> Message:
        """The next message; fails if none comes within `timeout_s` or the stream ends."""
        try:
            async with asyncio.timeout(timeout_s):
                item = await self._items.get()
        except TimeoutError:
            raise AssertionError(f"no message within {timeout_s}s") from None
        if isinstance(item, _End):
            self._items.put_nowait(item)  # it stays ended
            raise AssertionError(f"the stream ended instead (error: {item.error!r})")
        return item

    async def take(self, count: int, timeout_s: float = 5.0) -> list[Message]:
        """The next `count` messages, all within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        taken: list[Message] = []
        while len(taken) < count:
            remaining = deadline - time.monotonic()
            try:
                taken.append(await self.next(max(remaining, 0.001)))
            except AssertionError as exc:
                raise AssertionError(f"got {len(taken)} of {count} messages: {exc}") from None
        return taken

    async def until(
        self, matches: Callable[[Message], bool], timeout_s: float = 5.0
    ) -> list[Message]:
        """Every message up to and including the first that `matches`, within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        taken: list[Message] = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                message = await self.next(max(remaining, 0.001))
            except AssertionError as exc:
                ids = [m.id for m in taken]
                raise AssertionError(f"no matching message after {ids}: {exc}") from None
            taken.append(message)
            if matches(message):
                return taken

    async def quiet(self, for_s: float) -> None:
        """Fail if a message comes within `for_s` (for what must not be sent, where no
        later event can stand for its absence)."""
        try:
            async with asyncio.timeout(for_s):
                item = await self._items.get()
        except TimeoutError:
            return
        self._items.put_nowait(item)
        raise AssertionError(f"expected nothing, got {item}")

    async def comment(self, timeout_s: float) -> Comment:
        """The next comment line (a keep-alive) from now on."""
        seen = len(self.comments)
        deadline = time.monotonic() + timeout_s
        while len(self.comments) == seen:
            remaining = deadline - time.monotonic()
            if self.ended is not None or remaining <= 0:
                raise AssertionError(f"no comment within {timeout_s}s (ended: {self.ended})")
            self._comment_seen.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._comment_seen.wait()
        return self.comments[seen]

    async def end(self, timeout_s: float) -> _End:
        """Wait for the server to end the stream; fails if it is still open after `timeout_s`.
        Messages still unread are skipped."""
        try:
            async with asyncio.timeout(timeout_s):
                while not isinstance(item := await self._items.get(), _End):
                    pass
        except TimeoutError:
            raise AssertionError(f"the stream was still open after {timeout_s}s") from None
        return item

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def open_stream(
    base_url: str,
    key: str,
    *,
    params: Mapping[str, str | list[str]] | None = None,
    last_event_id: int | None = None,
) -> AsyncIterator[SseStream]:
    """GET /api/v1/events with `key`: the stream, once it has begun. Closed on the way out."""
    headers = {"X-API-Key": key}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    timeout = httpx.Timeout(5.0, read=None)  # a stream may be quiet for long
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=timeout) as client,
        client.stream("GET", EVENTS, params=params, headers=headers) as response,
    ):
        assert response.status_code == 200, (response.status_code, await response.aread())
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = SseStream(response)
        try:
            await stream.opened()
            yield stream
        finally:
            await stream.close()


async def refusal(
    base_url: str, headers: Mapping[str, str], params: Mapping[str, str] | None = None
) -> httpx.Response:
    """The answer to a stream request that must not start a stream: read in full (a stream
    that did start fails here, by its status, instead of hanging the test)."""
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=5.0) as client,
        client.stream("GET", EVENTS, params=params, headers=headers) as response,
    ):
        assert response.status_code != 200, "a stream started"
        await response.aread()
        return response
