"""Dispatching a stored task: publish its message with a confirm, then the guarded
NEW -> PENDING. The create path and the relay both go through here.

A task without a confirmed message is NEW, by definition: if the broker does not confirm,
nothing changes and the relay tries again later. If the database fails after the confirm,
the task stays NEW with its message queued; a worker's claim accepts NEW, and a duplicate
publish by the relay would be harmless (the claim runs a task once).
"""

import logging
from collections.abc import Awaitable, Callable

from shared.domain.records import TaskRecord
from shared.logs import log_task
from shared.messaging.publisher import Publisher

log = logging.getLogger(__name__)

# Records that the broker confirmed a task's message: the guarded NEW -> PENDING, on
# whatever connection the caller holds (the relay keeps its rows locked meanwhile).
MarkPublished = Callable[[TaskRecord], Awaitable[TaskRecord | None]]


async def dispatch(
    publisher: Publisher, task: TaskRecord, mark_published: MarkPublished
) -> TaskRecord | None:
    """Publish `task`, then mark it published; BrokerUnavailable if not confirmed in time.

    Returns what `mark_published` returns: the row as marked, or None when a worker had
    already moved the task on (its message outran the mark).
    """
    await publisher.publish(task.id, task.priority, task.dispatch_generation)
    published = await mark_published(task)
    if published is not None:
        log_task(
            log,
            logging.INFO,
            "task %s published (PENDING)",
            task.id,
            task_id=task.id,
            status="PENDING",
        )
    return published
