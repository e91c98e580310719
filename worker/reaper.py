"""The reaper: settles running tasks whose lease expired, because their worker died.

Such a task goes back to NEW (the relay publishes it again and the next claim counts a new
attempt), unless it was cancelled meanwhile (CANCELLED) or its workers keep dying (FAILED,
"worker lost"; its message goes to the dead-letter queue). Every move is fenced on the
attempt and the expired lease, so a worker that renews in time wins.
"""

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from shared import messages
from shared import transitions as t
from shared.broker import Publisher
from shared.db import connect
from shared.errors import BrokerUnavailable, DatabaseUnavailable
from shared.logs import task_fields
from shared.models import TaskRecord
from shared.repository import TaskRepository
from shared.settings import Settings
from worker import metrics

log = logging.getLogger(__name__)

WORKER_LOST = "worker lost"
BATCH_SIZE = 100


def verdict(task: TaskRecord, max_deliveries: int) -> t.Transition:
    """What becomes of a task whose worker died."""
    if task.cancel_requested:
        return t.CANCEL_RUNNING
    if task.lost_attempts + 1 >= max_deliveries:
        return t.FAIL
    return t.LOSE


async def reap_once(engine: AsyncEngine, publisher: Publisher, settings: Settings) -> int:
    async with connect(engine) as conn:
        repo = TaskRepository(conn)
        reaped = 0
        for task in await repo.expired_leases(limit=BATCH_SIZE):
            transition = verdict(task, settings.max_deliveries)
            error = WORKER_LOST if transition is t.FAIL else None
            if await repo.reap(task, transition=transition, error=error) is None:
                continue  # its worker renewed the lease after all, or another reaper won
            reaped += 1
            status = transition.target.value
            log.warning(
                "task %s: worker lost on attempt %d -> %s",
                task.id,
                task.attempts,
                status,
                extra=task_fields(task.id, status, task.attempts),
            )
            if transition is t.FAIL:
                metrics.DEAD_LETTERED.inc()
                await _dead_letter(publisher, task)
    return reaped


async def _dead_letter(publisher: Publisher, task: TaskRecord) -> None:
    try:
        await publisher.dead_letter(messages.encode(task.id), WORKER_LOST, str(task.id))
    except BrokerUnavailable as exc:
        # The task is FAILED in the database either way; only the DLQ copy is missing.
        log.warning("task %s: could not dead-letter: %s", task.id, exc)


async def run_reaper(engine: AsyncEngine, publisher: Publisher, settings: Settings) -> None:
    while True:
        await asyncio.sleep(settings.lease_seconds / 2)
        try:
            await reap_once(engine, publisher, settings)
        except DatabaseUnavailable:
            log.warning("reaper paused: database unavailable")
