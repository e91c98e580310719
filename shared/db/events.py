"""The history aggregate: the events of a task, oldest first.

Events are written only by `shared.db.write_path`, in the statement that changes the task.
"""

import uuid

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.engine import translate_unavailable
from shared.db.tables import task_events
from shared.domain.records import TaskEvent

_OF_TASK = (
    select(task_events)
    .where(task_events.c.task_id == bindparam("task_id"))
    .order_by(task_events.c.id)
)


class EventRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def of_task(self, task_id: uuid.UUID) -> list[TaskEvent]:
        with translate_unavailable():
            rows = (await self._conn.execute(_OF_TASK, {"task_id": task_id})).mappings().all()
        return [TaskEvent.from_row(row) for row in rows]
