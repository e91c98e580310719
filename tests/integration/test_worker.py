"""The worker as a real process: results, failures, concurrency, priority, cancellation."""

import asyncio
import itertools
from datetime import datetime

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.domain.enums import TaskPriority, TaskStatus
from shared.domain.records import TaskRecord
from shared.messaging.messages import task_message
from shared.settings import Settings
from tests.support.processes import StartWorker
from tests.support.tasks import (
    URL,
    all_tasks,
    create,
    wait_all_terminal,
    wait_log,
    wait_task,
)

# Every transition these tests cause keeps the counters equal to count(*).
pytestmark = pytest.mark.usefixtures("counts_stay_exact")


def max_overlap(done: list[TaskRecord]) -> int:
    """The most tasks that were running at the same instant."""
    events = sorted(
        itertools.chain.from_iterable(
            [(task.started_at, 1), (task.completed_at, -1)] for task in done
        ),
        key=lambda event: (event[0], event[1]),
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


async def test_task_completes_with_result_and_timestamps(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    workers: StartWorker,
) -> None:
    await workers()
    task_id = await create(client, params={"duration": 0.2})

    [task] = await wait_all_terminal(engine, 1)

    assert task.id == task_id
    assert task.status is TaskStatus.COMPLETED
    assert task.result == {"slept": 0.2}
    assert task.attempts == 1 and task.error is None
    assert task.started_at is not None and task.completed_at is not None
    assert task.created_at <= task.started_at <= task.completed_at
    status = (await client.get(f"{URL}/{task_id}/status")).json()
    assert status["duration_seconds"] >= 0.2


async def test_failing_handler_ends_failed_with_the_error(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    workers: StartWorker,
) -> None:
    await workers()
    await create(client, kind="fail", params={"message": "disk on fire"})

    [task] = await wait_all_terminal(engine, 1)

    assert task.status is TaskStatus.FAILED
    assert task.error is not None and task.error.startswith("SimulatedFailure: disk on fire")
    assert task.result is None and task.completed_at is not None


async def test_one_worker_runs_exactly_two_tasks_at_once(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    workers: StartWorker,
) -> None:
    await workers()
    for _ in range(6):
        await create(client, params={"duration": 0.5})

    done = await wait_all_terminal(engine, 6)

    assert all(task.status is TaskStatus.COMPLETED for task in done)
    assert max_overlap(done) == 2


async def test_backlog_starts_high_then_medium_then_low(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    workers: StartWorker,
) -> None:
    # Queued with no worker running, lowest priority first so arrival order cannot explain it.
    for priority in ("LOW", "MEDIUM", "HIGH") * 4:
        await create(client, priority=priority, params={"duration": 0.1})
    await workers()

    done = await wait_all_terminal(engine, 12)

    def starts(priority: str) -> list[datetime]:
        return sorted(t.started_at for t in done if t.priority == priority and t.started_at)

    high, medium, low = (starts(p) for p in ("HIGH", "MEDIUM", "LOW"))
    assert len(high) == len(medium) == len(low) == 4
    assert high[-1] <= medium[0] and medium[-1] <= low[0]


async def test_task_cancelled_before_start_never_starts(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    workers: StartWorker,
) -> None:
    cancelled = await create(client, params={"duration": 0})
    assert (await client.delete(f"{URL}/{cancelled}")).status_code == 200
    follower = await create(client, params={"duration": 0})
    worker = await workers()

    await wait_task(engine, follower, lambda t: t.status is TaskStatus.COMPLETED, "follower done")

    await wait_log(worker, f"task {cancelled} not started: it is CANCELLED")
    [task] = [task for task in await all_tasks(engine) if task.id == cancelled]
    assert task.status is TaskStatus.CANCELLED
    assert task.started_at is None and task.attempts == 0


async def test_running_task_is_stopped_within_a_second_of_cancel(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    workers: StartWorker,
) -> None:
    await workers()
    task_id = await create(client, params={"duration": 60})
    await wait_task(engine, task_id, lambda t: t.status is TaskStatus.IN_PROGRESS, "running")

    response = await client.delete(f"{URL}/{task_id}")
    loop = asyncio.get_running_loop()
    asked_at = loop.time()
    task = await wait_task(engine, task_id, lambda t: t.status.is_terminal, "cancelled")
    noticed_after_s = loop.time() - asked_at

    assert response.status_code == 202
    assert task.status is TaskStatus.CANCELLED
    assert task.started_at is not None and task.completed_at is not None
    assert noticed_after_s < 1.5  # poll interval 0.5 s plus the test's own polling


async def test_duplicate_message_for_a_finished_task_runs_nothing(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    workers: StartWorker,
    channel: AbstractChannel,
    settings: Settings,
) -> None:
    worker = await workers()
    task_id = await create(client, params={"duration": 0})
    [before] = await wait_all_terminal(engine, 1)

    await channel.default_exchange.publish(
        task_message(task_id, TaskPriority.HIGH), routing_key=settings.queue_name
    )
    await wait_log(worker, f"task {task_id} not started: it is COMPLETED")

    [after] = await all_tasks(engine)
    assert after == before  # attempts, timestamps, result: untouched


async def test_three_workers_complete_300_tasks_exactly_once_and_share_them(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    workers: StartWorker,
) -> None:
    started = [await workers() for _ in range(3)]

    ids = await asyncio.gather(*(create(client, params={"duration": 0.01}) for _ in range(300)))
    done = await wait_all_terminal(engine, 300, timeout_s=90)

    assert {task.id for task in done} == set(ids)
    assert all(task.status is TaskStatus.COMPLETED and task.attempts == 1 for task in done)
    completions = [worker.output.count(" COMPLETED") for worker in started]
    assert sum(completions) == 300
    assert all(count > 0 for count in completions), completions


async def test_unusable_message_is_dead_lettered_and_the_worker_keeps_serving(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    workers: StartWorker,
    channel: AbstractChannel,
    settings: Settings,
) -> None:
    await workers()
    await channel.default_exchange.publish(
        aio_pika.Message(b"not json"), routing_key=settings.queue_name
    )

    await create(client, params={"duration": 0})
    [task] = await wait_all_terminal(engine, 1)

    dlq = await channel.get_queue(f"{settings.queue_name}.dlq")
    dead = await dlq.get(timeout=5)
    assert dead is not None and dead.body == b"not json"
    await dead.ack()
    assert task.status is TaskStatus.COMPLETED
