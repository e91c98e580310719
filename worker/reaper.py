"""The reaper: settles running tasks whose lease expired, because their worker died.

What becomes of each is `shared.domain.reaping.verdict`: back to NEW (the relay publishes
it again and the next claim counts a new attempt), CANCELLED if cancellation was asked, or
FAILED "worker lost" when its workers keep dying (its id also goes to the dead-letter
queue). Every move is fenced on the attempt and the expired lease, so a worker that renews
in time wins. The reaper never publishes a task itself: the relay is the one publisher of
recovered work, so a failed publish here can never strand a task.
"""

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.background.periodic import Loop
from shared.db.engine import connect
from shared.db.tasks import TaskRepository
from shared.domain import transitions as t
from shared.domain.errors import BrokerUnavailable
from shared.domain.reaping import WORKER_LOST, verdict
from shared.domain.records import TaskRecord
from shared.logs import task_fields
from shared.messaging import messages
from shared.messaging.publisher import Publisher
from shared.settings import Settings
from worker import metrics

log = logging.getLogger(__name__)

BATCH_SIZE = 100


async def reap_once(
    engine: AsyncEngine, publisher: Publisher, settings: Settings, worker_id: str | None = None
) -> int:
    async with connect(engine) as conn:
        repo = TaskRepository(conn, worker_id=worker_id)
        reaped = 0
        for task in await repo.expired_leases(limit=BATCH_SIZE):
            transition = verdict(task, settings.max_deliveries)
            reason = WORKER_LOST if transition is t.FAIL else None
            reaped_task = await repo.reap(task, transition=transition, reason=reason)
            if reaped_task is None:
                continue  # its worker renewed the lease after all, or another reaper won
            reaped += 1
            status = reaped_task.status.value
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


def reaper_loop(
    engine: AsyncEngine, publisher: Publisher, settings: Settings, worker_id: str
) -> Loop:
    async def step() -> bool:
        return await reap_once(engine, publisher, settings, worker_id) == BATCH_SIZE

    return Loop("reaper", settings.lease_seconds / 2, step)
