"""Retries with growing backoff, time limits, and messages no worker can use."""

import itertools
import re
import uuid
from datetime import datetime

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.domain.enums import TaskStatus
from shared.messaging.topology import DEAD_LETTER_REASON_HEADER
from shared.settings import Settings
from tests.support.processes import StartWorker
from tests.support.tasks import create, wait_all_terminal

# Every transition these tests cause keeps the counters equal to count(*).
pytestmark = pytest.mark.usefixtures("counts_stay_exact")


def attempt_starts(output: str, task_id: uuid.UUID) -> list[datetime]:
    pattern = rf"^(\S+ \S+) INFO .*task {task_id} IN_PROGRESS \(attempt \d+\)$"
    return [
        datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")
        for stamp in re.findall(pattern, output, flags=re.MULTILINE)
    ]


async def test_retries_back_off_longer_each_time_until_success_or_exhaustion(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    workers: StartWorker,
) -> None:
    worker = await workers(RETRY_BASE_SECONDS="0.3", RETRY_MAX_SECONDS="5")
    flaky = await create(client, kind="flaky", params={"fail_times": 2}, max_retries=3)
    failing = await create(client, kind="fail", params={"message": "no"}, max_retries=2)

    done = {task.id: task for task in await wait_all_terminal(engine, 2, timeout_s=30)}

    assert done[flaky].status is TaskStatus.COMPLETED and done[flaky].attempts == 3
    assert done[flaky].result == {"succeeded_on_attempt": 3}
    assert done[failing].status is TaskStatus.FAILED and done[failing].attempts == 3
    assert (done[failing].error or "").startswith("SimulatedFailure")
    for task_id in (flaky, failing):
        starts = attempt_starts(worker.output, task_id)
        assert len(starts) == 3
        first_gap, second_gap = (b - a for a, b in itertools.pairwise(starts))
        assert first_gap.total_seconds() >= 0.15  # half the base delay, at the least
        assert second_gap > first_gap


async def test_an_attempt_over_its_time_limit_fails_with_timeout(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    workers: StartWorker,
) -> None:
    await workers()
    await create(client, params={"duration": 30}, timeout_seconds=1)

    [task] = await wait_all_terminal(engine, 1, timeout_s=15)

    assert task.status is TaskStatus.FAILED
    assert task.error == "timeout"
    assert task.started_at is not None and task.completed_at is not None
    assert (task.completed_at - task.started_at).total_seconds() < 5


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b'{"id": 1}', "no task_id"),
        (b'{"task_id": "00000000-0000-4000-8000-000000000000"}', "unknown task"),
    ],
)
async def test_unusable_messages_go_to_the_dlq_with_a_reason_and_work_goes_on(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    workers: StartWorker,
    channel: AbstractChannel,
    settings: Settings,
    body: bytes,
    reason: str,
) -> None:
    await workers()
    await channel.default_exchange.publish(aio_pika.Message(body), routing_key=settings.queue_name)
    await create(client, params={"duration": 0})

    [task] = await wait_all_terminal(engine, 1)

    dlq = await channel.get_queue(f"{settings.queue_name}.dlq")
    dead = await dlq.get(timeout=5)
    assert dead is not None
    await dead.ack()
    assert dead.body == body
    assert reason in str(dead.headers[DEAD_LETTER_REASON_HEADER])
    assert await dlq.get(fail=False) is None  # once, not in a loop
    assert task.status is TaskStatus.COMPLETED
