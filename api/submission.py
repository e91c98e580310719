"""Submitting a task: store it, publish it, mark it published — in that order.

The row is committed before the publish, so a worker never receives an id the database does
not have; a publish that fails leaves the task NEW, stored and safe, for the relay.
No database connection is held while the broker confirms: under load the pool, not the
broker, would otherwise cap how many tasks are accepted per second.
"""

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from api.metrics import TASKS_CREATED
from api.schemas import TaskCreate
from shared.broker import Publisher
from shared.db import connect
from shared.errors import BrokerUnavailable, DatabaseUnavailable, TimeoutTooLong
from shared.logs import task_fields
from shared.models import TaskRecord
from shared.repository import TaskRepository
from shared.settings import Settings

log = logging.getLogger(__name__)


async def submit(
    engine: AsyncEngine, publisher: Publisher, request: TaskCreate, settings: Settings
) -> TaskRecord:
    timeout_s = request.timeout_seconds or settings.task_timeout_seconds
    if timeout_s > settings.max_task_timeout_seconds:
        raise TimeoutTooLong(
            f"timeout_seconds must be at most {settings.max_task_timeout_seconds}, "
            "below the broker's acknowledgement timeout"
        )
    async with connect(engine) as conn:
        task = await TaskRepository(conn).create(
            title=request.title,
            description=request.description,
            priority=request.priority,
            kind=request.kind,
            params=request.params,
            max_retries=request.max_retries,
            timeout_seconds=timeout_s,
        )
    log.info("task %s created (NEW)", task.id, extra=task_fields(task.id, "NEW"))
    TASKS_CREATED.labels(task.priority.value).inc()
    return await publish(engine, publisher, task)


async def publish(engine: AsyncEngine, publisher: Publisher, task: TaskRecord) -> TaskRecord:
    """Publish a NEW task and move it to PENDING; on broker trouble it simply stays NEW."""
    try:
        await publisher.publish(task.id, task.priority)
    except BrokerUnavailable as exc:
        log.warning("task %s stays NEW: %s", task.id, exc)
        return task
    try:
        async with connect(engine) as conn:
            repo = TaskRepository(conn)
            published = await repo.mark_published(task.id) or await repo.get(task.id)
    except DatabaseUnavailable:
        # Stored and queued: the task is accepted, and a worker's claim takes it from NEW.
        # Answering 503 here would only invite the client to submit it twice.
        log.warning("task %s published but not marked PENDING: database unavailable", task.id)
        return task
    # If a worker got the message first, mark_published found the task moved on: report that.
    status = published.status.value
    log.info("task %s published (%s)", task.id, status, extra=task_fields(task.id, status))
    return published
