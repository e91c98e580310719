"""One hub per API process: reads each new history row once and fans it out to every
stream in the process that may see it.

The hub wakes on `NOTIFY taskq_events` (one listening connection per process, not one per
stream; see `shared.db.wakeups`) or every EVENTS_POLL_SECONDS, and reads the settled rows
past its position. A stream that resumes (Last-Event-ID) first reads its own backlog from
the database up to the hub's position, then joins the hub with no await in between, so it
misses nothing and gets nothing twice.
"""

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncGenerator
from typing import Any

from fastapi.sse import format_sse_event
from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.background.periodic import Loop
from shared.db.engine import connect
from shared.db.events import EventRepository, StreamFilter, StreamPosition
from shared.db.wakeups import listen
from shared.domain.errors import DatabaseUnavailable
from shared.domain.records import StreamEvent
from shared.settings import Settings

log = logging.getLogger(__name__)

# Rows read per query, by the hub and by a stream catching up.
BATCH = 500
KEEP_ALIVE = b": keep-alive\n\n"

STREAMS_OPEN = Gauge("taskq_api_streams_open", "Event streams connected to this process")
STREAMS_DROPPED = Counter(
    "taskq_api_streams_dropped_total", "Event streams the server ended", ["reason"]
)
EVENTS_SENT = Counter("taskq_api_stream_events_total", "Events queued to event streams")


def encode(event: StreamEvent) -> bytes:
    """The SSE message of one event, built once however many streams send it."""
    data: dict[str, Any] = {
        "id": event.id,
        "task_id": str(event.task_id),
        "from": event.from_status,
        "to": event.to_status,
        "attempt": event.attempt,
        "reason": event.reason,
        "worker_id": event.worker_id,
        "at": event.at.isoformat(),
        "task": {
            "id": str(event.task_id),
            "owner_id": str(event.owner_id),
            "title": event.title,
            "priority": event.priority,
            "status": event.status,
            "kind": event.kind,
            "created_at": event.created_at.isoformat(),
        },
    }
    return format_sse_event(
        data_str=json.dumps(data, separators=(",", ":")), event="task", id=str(event.id)
    )


class Subscription:
    """A live stream's bounded buffer of encoded events, filled by the hub."""

    def __init__(
        self, wanted: StreamFilter, after: StreamPosition, capacity: int, dropped: asyncio.Event
    ) -> None:
        self.wanted = wanted
        self._dropped = dropped
        self._after = after  # events at or before it were sent already (catch-up, elsewhere)
        self._capacity = capacity
        self._chunks: deque[bytes] = deque()
        self._waiting = 0
        self._ready = asyncio.Event()

    def offer(self, batch: list[tuple[StreamEvent, bytes]]) -> bool:
        """Queue the events of `batch` this stream wants; False once it is too far behind."""
        wanted = [
            message
            for event, message in batch
            if event.position > self._after and self.wanted.admits(event)
        ]
        if not wanted:
            return True
        if self._waiting + len(wanted) > self._capacity:
            self._chunks.clear()  # its memory goes now, not when the connection does
            self._ready.clear()
            self._dropped.set()
            return False
        self._chunks.append(b"".join(wanted))
        self._waiting += len(wanted)
        EVENTS_SENT.inc(len(wanted))
        self._ready.set()
        return True

    async def take(self, timeout_s: float) -> bytes | None:
        """Everything waiting, as one chunk; None if nothing came within `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._ready.wait()
        if not self._chunks:
            return None
        chunk = b"".join(self._chunks)
        self._chunks.clear()
        self._waiting = 0
        self._ready.clear()
        return chunk


class EventHub:
    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self._subscribers: set[Subscription] = set()
        self._woken = asyncio.Event()
        self._started = asyncio.Event()
        self._position: StreamPosition = (0, 0)
        self._first_read = True
        # Rows per read: never more than one stream may have waiting, or a burst would drop
        # every stream of a small STREAM_BUFFER_EVENTS, however promptly its client reads.
        self._batch = min(BATCH, settings.stream_buffer_events)

    def loops(self) -> list[Loop]:
        return [Loop("event-hub", 0, self._read), Loop("event-listener", 1.0, self._listen)]

    async def position(self) -> StreamPosition:
        """Where the hub stands; waits (a bounded time) for its first read."""
        try:
            async with asyncio.timeout(self._settings.db_connect_timeout_seconds + 1):
                await self._started.wait()
        except TimeoutError:
            raise DatabaseUnavailable() from None
        return self._position

    async def stream(
        self, wanted: StreamFilter, after: StreamPosition | None, dropped: asyncio.Event
    ) -> AsyncGenerator[bytes]:
        """The stream's messages: its backlog past `after` (if given), then live ones.

        `dropped` is set if the stream falls STREAM_BUFFER_EVENTS behind; it gets no more.
        """
        current = await self.position()  # also: never catch up from before the first read
        position = current if after is None else after
        while position < self._position:
            chunk, position = await self._backlog(wanted, position)
            if chunk:
                yield chunk
        capacity = self._settings.stream_buffer_events
        subscription = Subscription(wanted, position, capacity, dropped)
        self._subscribers.add(subscription)  # no await since the check above: no gap
        STREAMS_OPEN.inc()
        try:
            while True:
                live = await subscription.take(self._settings.stream_keepalive_seconds)
                yield live if live is not None else KEEP_ALIVE
        finally:
            self._subscribers.discard(subscription)
            STREAMS_OPEN.dec()

    async def _backlog(
        self, wanted: StreamFilter, position: StreamPosition
    ) -> tuple[bytes, StreamPosition]:
        """One page of a resuming stream's backlog, up to where the hub stands now."""
        target = self._position
        async with connect(self._engine) as conn:
            found = await EventRepository(conn).settled_after(position, limit=BATCH, wanted=wanted)
        events = [event for event in found if event.position <= target]
        more = len(found) == BATCH and len(events) == len(found)
        return b"".join(encode(event) for event in events), events[-1].position if more else target

    async def _read(self) -> bool:
        """One read of new settled rows, fanned out; True if there may be more at once."""
        if not self._first_read:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.events_poll_seconds):
                    await self._woken.wait()
        self._woken.clear()
        self._first_read = False
        async with connect(self._engine) as conn:
            events = EventRepository(conn)
            if not self._started.is_set():
                self._position = await events.frontier()
                self._started.set()
            elif not self._subscribers:
                # Nobody to send to: move on without reading (and encoding) every row. A
                # stream that subscribed during the await is owed the rows; read them.
                frontier = await events.frontier()
                if not self._subscribers:
                    self._position = max(self._position, frontier)
                    return False
            found = await events.settled_after(self._position, limit=self._batch)
        if found:
            self._fan_out(found)
        if len(found) == self._batch:
            self._woken.set()
            return True
        return False

    def _fan_out(self, found: list[StreamEvent]) -> None:
        batch = [(event, encode(event)) for event in found]
        self._position = found[-1].position
        for subscription in list(self._subscribers):
            if not subscription.offer(batch):
                self._subscribers.discard(subscription)

    async def _listen(self) -> None:
        """Hold the process's LISTEN connection until it breaks (then the loop reconnects)."""
        await listen(self._settings, self._woken.set)
