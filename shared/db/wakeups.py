"""Wake-ups for the event stream: a NOTIFY after history rows are written, coalesced.

Every process that writes history (API, worker) installs one on its engine. After a
write-path statement commits, the process sends one `NOTIFY taskq_events` from a pooled
connection, at most once per COALESCE_S however many rows were written meanwhile, in a
tiny transaction of its own: never inside a writing one, whose commit it would serialise
behind every other notifying commit (PostgreSQL orders NOTIFYs under one global lock).
A wake-up that is lost (the process died between the commit and the NOTIFY) only delays
the stream until its next poll: the history table is the source.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.background.periodic import Loop
from shared.db import driver
from shared.db.engine import connect, translate_unavailable
from shared.db.write_path import RECORDS_HISTORY
from shared.domain.errors import DatabaseUnavailable
from shared.settings import Settings

log = logging.getLogger(__name__)

CHANNEL = "taskq_events"
# Long enough to fold a burst of transitions into one NOTIFY (and one read by every API
# process's hub), short next to the 1 s the stream promises. Measured, interleaved in one
# session: a worker's drain ran at 258 and 240 tasks/s with 5 ms, 321 and 337 with 25 ms.
COALESCE_S = 0.025
_NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', '')")
_PENDING = "taskq_history_pending"


class Wakeups:
    """Sends the stream's wake-up after this process's history writes have committed."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._poked = asyncio.Event()

    def install(self) -> None:
        sync_engine = self._engine.sync_engine
        event.listen(sync_engine, "after_execute", self._after_execute)
        event.listen(sync_engine, "commit", self._after_commit)
        event.listen(sync_engine, "rollback", self._after_rollback)
        # Statements run on the driver (`shared.db.driver`) are unseen by those events.
        driver.on_history_written(sync_engine, self._poked.set)

    def loop(self) -> Loop:
        return Loop("wakeups", 0, self._notify_once_poked)

    def _after_execute(
        self, conn: Connection, clause: Any, multi: Any, params: Any, options: Any, result: Any
    ) -> None:
        if not options.get(RECORDS_HISTORY):
            return
        if options.get("isolation_level", "AUTOCOMMIT") == "AUTOCOMMIT":
            self._poked.set()  # autocommit: the row is committed already
        else:
            conn.info[_PENDING] = True  # in a transaction: once it commits

    def _after_commit(self, conn: Connection) -> None:
        if not conn.invalidated and conn.info.pop(_PENDING, False):
            self._poked.set()

    def _after_rollback(self, conn: Connection) -> None:
        # An invalidated connection (a statement cancelled or broken mid-flight) has no
        # DBAPI connection left, nor its info (cleared when the pool reconnects), and
        # `conn.info` would raise PendingRollbackError here, in place of the error that is
        # being handled: a CancelledError, at shutdown, that its loop then never sees.
        if not conn.invalidated:
            conn.info.pop(_PENDING, None)

    async def _notify_once_poked(self) -> bool:
        await self._poked.wait()
        await asyncio.sleep(COALESCE_S)
        self._poked.clear()
        async with connect(self._engine) as conn:
            with translate_unavailable():
                await conn.execute(_NOTIFY)
        return True


async def listen(settings: Settings, on_wake: Callable[[], None]) -> None:
    """LISTEN on its own connection (not a pooled one: it is held for good), calling
    `on_wake` for every wake-up, and once at the start for whatever came while nobody
    listened; returns when the connection breaks."""
    dsn = make_url(settings.database_url).set(drivername="postgresql")
    try:
        conn = await asyncpg.connect(
            dsn.render_as_string(hide_password=False),
            timeout=settings.db_connect_timeout_seconds,
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailable() from exc
    try:
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _: closed.set())
        await conn.add_listener(CHANNEL, lambda *_: on_wake())
        on_wake()
        await closed.wait()
        log.warning("event listener connection lost; reconnecting")
    finally:
        await conn.close(timeout=1)
