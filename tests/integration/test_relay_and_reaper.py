"""The relay publishes what the broker never confirmed; the reaper settles dead workers' tasks."""

import asyncio
import uuid
from datetime import timedelta

import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.background.relay import relay_once
from shared.db.tables import tasks
from shared.db.tasks import TaskRepository
from shared.domain.enums import TaskPriority, TaskStatus
from shared.domain.reaping import WORKER_LOST
from shared.messaging import messages
from shared.messaging.publisher import Publisher
from shared.messaging.topology import DEAD_LETTER_REASON_HEADER
from shared.settings import Settings
from tests.support.tasks import expire, make_task
from worker.reaper import reap_once

# Every transition these tests cause keeps the counters equal to count(*).
pytestmark = pytest.mark.usefixtures("counts_stay_exact")


async def stored_new(repo: TaskRepository, engine: AsyncEngine, count: int) -> list[uuid.UUID]:
    """NEW tasks as the API leaves them when the broker is down, aged past the relay's grace."""
    ids = []
    for _ in range(count):
        task = await make_task(repo, priority=TaskPriority.LOW)
        ids.append(task.id)
    async with engine.connect() as conn:
        await conn.execute(
            update(tasks).values(updated_at=tasks.c.updated_at - timedelta(minutes=1))
        )
    return ids


async def test_concurrent_relays_publish_each_new_task_exactly_once(
    repo: TaskRepository, engine: AsyncEngine, channel: AbstractChannel, settings: Settings
) -> None:
    ids = await stored_new(repo, engine, 60)
    publishers = [Publisher(settings) for _ in range(3)]
    for publisher in publishers:
        await publisher.start()
        assert await publisher.wait_connected(timeout_s=5)

    counts = await asyncio.gather(*(relay_once(engine, p, settings) for p in publishers))
    for publisher in publishers:
        await publisher.close()

    assert sum(counts) == 60
    queue = await channel.get_queue(settings.queue_name)
    published = []
    while (message := await queue.get(fail=False)) is not None:
        await message.ack()
        published.append(messages.decode(message.body))
    assert sorted(published) == sorted(ids)
    statuses = {(await repo.get(task_id)).status for task_id in ids}
    assert statuses == {TaskStatus.PENDING}


async def test_reaper_sends_a_dead_workers_task_back_as_new_cancels_or_fails_poison(
    repo: TaskRepository, engine: AsyncEngine, channel: AbstractChannel, settings: Settings
) -> None:
    lost, cancelled, poison, alive = await stored_new(repo, engine, 4)
    for task_id in (lost, cancelled, poison, alive):
        await repo.claim(task_id, lease_s=30)
    await repo.cancel(cancelled)
    await expire(engine, lost)
    await expire(engine, cancelled)
    await expire(engine, poison, lost_attempts=settings.max_deliveries - 1)
    publisher = Publisher(settings)
    await publisher.start()
    assert await publisher.wait_connected(timeout_s=5)

    reaped = await reap_once(engine, publisher, settings)
    await publisher.close()

    assert reaped == 3
    assert (await repo.get(lost)).status is TaskStatus.NEW
    assert (await repo.get(lost)).lost_attempts == 1
    assert (await repo.get(cancelled)).status is TaskStatus.CANCELLED
    failed = await repo.get(poison)
    assert (failed.status, failed.error) == (TaskStatus.FAILED, WORKER_LOST)
    assert (await repo.get(alive)).status is TaskStatus.IN_PROGRESS
    dlq = await channel.get_queue(f"{settings.queue_name}.dlq")
    dead = await dlq.get(timeout=5)
    assert dead is not None
    await dead.ack()
    assert messages.decode(dead.body) == poison
    assert dead.headers[DEAD_LETTER_REASON_HEADER] == WORKER_LOST
