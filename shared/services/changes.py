"""Changing a task after it is created: its title, description and priority; running a
finished one again.

A new priority for a queued task is a new dispatch: RabbitMQ cannot change a message in a
queue, so the task is published again at its new priority with the next dispatch
generation, and its older message goes stale (the claim refuses it). If the broker is away
the change is kept and the task stays NEW until the relay publishes its current dispatch.
"""

import logging
import uuid

from shared.db.tasks import TaskRepository
from shared.domain.enums import TaskPriority
from shared.domain.errors import BrokerUnavailable
from shared.domain.records import TaskRecord
from shared.logs import task_fields
from shared.messaging.publisher import Publisher
from shared.services.dispatch import dispatch

log = logging.getLogger(__name__)


async def rerun_task(
    repo: TaskRepository,
    publisher: Publisher,
    task_id: uuid.UUID,
    *,
    priority: TaskPriority | None = None,
) -> TaskRecord:
    """Run a FAILED or CANCELLED task again: a new dispatch, published now if it can be."""
    return await _dispatch_now(repo, publisher, await repo.rerun(task_id, priority=priority))


async def change_task(
    repo: TaskRepository,
    publisher: Publisher,
    task_id: uuid.UUID,
    *,
    title: str | None = None,
    description: str | None = None,
    priority: TaskPriority | None = None,
) -> TaskRecord:
    task, requeue = await repo.update(
        task_id, title=title, description=description, priority=priority
    )
    return await _dispatch_now(repo, publisher, task) if requeue else task


async def _dispatch_now(repo: TaskRepository, publisher: Publisher, task: TaskRecord) -> TaskRecord:
    """Publish the task's new dispatch; if the broker is away it stays NEW for the relay."""
    try:
        # None: a worker claimed the new dispatch before it was marked; report that.
        return await dispatch(publisher, task, repo.mark_published) or await repo.get(task.id)
    except BrokerUnavailable as exc:
        log.warning("task %s stays NEW: %s", task.id, exc, extra=task_fields(task.id, "NEW"))
        return task
