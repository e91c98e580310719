"""Submitting a task: store it, then dispatch it (publish, mark published), in that order.

The row is committed before the publish, so a worker never receives an id the database does
not have; a publish that fails leaves the task NEW, stored and safe, for the relay.
No database connection is held while the broker confirms: under load the pool, not the
broker, would otherwise cap how many tasks are accepted per second.
"""

import dataclasses
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import connect
from shared.db.tasks import TaskRepository
from shared.domain.errors import BrokerUnavailable, DatabaseUnavailable, TimeoutTooLong
from shared.domain.records import NewTask, TaskRecord
from shared.logs import log_task, task_fields
from shared.messaging.publisher import Publisher
from shared.services.dispatch import dispatch
from shared.services.marks import PublishMarks
from shared.settings import Settings

log = logging.getLogger(__name__)


class Submitter:
    """What the create route needs, built once at start-up: one dependency per request
    instead of four (each costs FastAPI a resolution per request)."""

    def __init__(
        self, engine: AsyncEngine, publisher: Publisher, marks: PublishMarks, settings: Settings
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._marks = marks
        self._settings = settings

    async def submit(self, new: NewTask) -> TaskRecord:
        """Store and queue a task: PENDING once the broker confirmed it, NEW if it did not."""
        engine = self._engine
        new = dataclasses.replace(new, timeout_seconds=_time_limit_s(new, self._settings))
        async with connect(engine) as conn:
            task = await TaskRepository(conn, user_id=new.owner_id).create(new)
        log_task(log, logging.INFO, "task %s created (NEW)", task.id, task_id=task.id, status="NEW")

        async def mark_published(stored: TaskRecord) -> TaskRecord:
            # None: a worker got the message first and moved the task on; report that.
            if (marked := await self._marks.mark(stored)) is not None:
                return marked
            async with connect(engine) as conn:
                return await TaskRepository(conn, user_id=new.owner_id).get(stored.id)

        try:
            return await dispatch(self._publisher, task, mark_published) or task
        except BrokerUnavailable as exc:
            log.warning("task %s stays NEW: %s", task.id, exc, extra=task_fields(task.id, "NEW"))
            return task
        except DatabaseUnavailable:
            # Stored and queued: the task is accepted, and a worker's claim takes it from NEW.
            # Answering 503 here would only invite the client to submit it twice.
            log.warning("task %s published but not marked PENDING: database unavailable", task.id)
            return task
        except Exception:
            # Stored, and queued or left for the relay: whatever went wrong after the commit,
            # the task is accepted, and a 500 would only invite the client to submit it twice.
            log.exception("task %s stays NEW after an error in dispatching it", task.id)
            return task


def _time_limit_s(new: NewTask, settings: Settings) -> int:
    timeout_s = new.timeout_seconds or settings.task_timeout_seconds
    if timeout_s > settings.max_task_timeout_seconds:
        raise TimeoutTooLong(
            f"timeout_seconds must be at most {settings.max_task_timeout_seconds}, "
            "below the broker's acknowledgement timeout"
        )
    return timeout_s
