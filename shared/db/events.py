"""The history aggregate: the events of a task, oldest first, and the event stream's reads.

Events are written only by `shared.db.write_path`, in the statement that changes the task.

The stream reads rows in (xact_id, id) order, and only rows whose transaction is older than
every transaction still running (`pg_snapshot_xmin`). An id from the sequence can become
visible after a higher one (its transaction commits later); a transaction older than the
oldest running one has committed or rolled back, so nothing can ever appear behind a
position the stream has passed: none skipped, none repeated.
"""

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.engine import translate_unavailable
from shared.db.tables import task_events, tasks
from shared.domain.enums import TaskStatus
from shared.domain.records import StreamEvent, TaskEvent

# Where a stream stands: the (xact_id, id) of the last history row it has gone past.
StreamPosition = tuple[int, int]
# Before every row: Last-Event-ID 0 replays the whole streamable history.
START: StreamPosition = (0, 0)

_OF_TASK = (
    select(*(column for column in task_events.c if column.name != "xact_id"))
    .where(task_events.c.task_id == bindparam("task_id"))
    .order_by(task_events.c.id)
)
_XACT = bindparam("xact", type_=task_events.c.xact_id.type)
_ID = bindparam("id", type_=task_events.c.id.type)
# Every transaction below this has ended: its rows are all there is of it.
_SETTLED = task_events.c.xact_id < func.pg_snapshot_xmin(func.pg_current_snapshot())
# Spelled out instead of a row comparison, so the partial (xact_id, id) index applies.
_PAST = and_(
    task_events.c.xact_id >= _XACT, or_(task_events.c.xact_id > _XACT, task_events.c.id > _ID)
)
_STREAM_COLUMNS = (
    task_events.c.id,
    task_events.c.xact_id,
    task_events.c.task_id,
    task_events.c.at,
    task_events.c.from_status,
    task_events.c.to_status,
    task_events.c.attempt,
    task_events.c.reason,
    task_events.c.worker_id,
    tasks.c.owner_id,
    tasks.c.title,
    tasks.c.priority,
    tasks.c.status,
    tasks.c.kind,
    tasks.c.created_at,
)
_LAST_SETTLED = (
    select(task_events.c.xact_id, task_events.c.id)
    .where(task_events.c.xact_id.is_not(None), _SETTLED)
    .order_by(task_events.c.xact_id.desc(), task_events.c.id.desc())
    .limit(1)
)
_POSITION_OF = select(task_events.c.xact_id).where(task_events.c.id == bindparam("event_id"))


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """Which events one stream may and wants to see; empty collections mean all."""

    owner: uuid.UUID | None = None  # None: every owner's (an admin)
    task_ids: Collection[uuid.UUID] = ()
    statuses: Collection[TaskStatus] = ()

    def admits(self, event: StreamEvent) -> bool:
        return (
            (self.owner is None or event.owner_id == self.owner)
            and (not self.task_ids or event.task_id in self.task_ids)
            and (not self.statuses or event.to_status in self.statuses)
        )


def _settled_after(wanted: StreamFilter, limit: int) -> Select[Any]:
    where: list[ColumnElement[bool]] = [_PAST, _SETTLED]
    if wanted.owner is not None:
        where.append(tasks.c.owner_id == wanted.owner)
    if wanted.task_ids:
        where.append(task_events.c.task_id.in_(list(wanted.task_ids)))
    if wanted.statuses:
        where.append(task_events.c.to_status.in_([s.value for s in wanted.statuses]))
    return (
        select(*_STREAM_COLUMNS)
        .join(tasks, tasks.c.id == task_events.c.task_id)
        .where(*where)
        .order_by(task_events.c.xact_id, task_events.c.id)
        .limit(limit)
    )


class EventRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def of_task(self, task_id: uuid.UUID) -> list[TaskEvent]:
        with translate_unavailable():
            rows = (await self._conn.execute(_OF_TASK, {"task_id": task_id})).mappings().all()
        return [TaskEvent.from_row(row) for row in rows]

    async def settled_after(
        self, position: StreamPosition, *, limit: int, wanted: StreamFilter | None = None
    ) -> list[StreamEvent]:
        """The events past `position` whose transactions have all ended, in stream order,
        with their tasks' current summaries."""
        statement = _settled_after(wanted or StreamFilter(), limit)
        xact, event_id = position
        with translate_unavailable():
            rows = (await self._conn.execute(statement, {"xact": xact, "id": event_id})).all()
        return [StreamEvent(*row) for row in rows]

    async def frontier(self) -> StreamPosition:
        """The position of the newest settled event: where a stream of 'from now on' starts."""
        with translate_unavailable():
            row = (await self._conn.execute(_LAST_SETTLED)).first()
        return START if row is None else (int(row[0]), int(row[1]))

    async def position_of(self, event_id: int) -> StreamPosition | None:
        """Where the stream stood right after sending event `event_id`; None if no such event.

        A row from before the stream existed (no xact_id) stands before all streamed ones.
        """
        if event_id == 0:
            return START
        with translate_unavailable():
            row = (await self._conn.execute(_POSITION_OF, {"event_id": event_id})).first()
        if row is None:
            return None
        return (0, 0) if row[0] is None else (int(row[0]), event_id)
