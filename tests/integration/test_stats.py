"""Statistics against numbers worked out by hand."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import __version__
from shared.db.engine import connect
from shared.db.stats import FINISHED
from shared.db.tables import task_events, tasks
from shared.db.tasks import TaskRepository
from shared.db.workers import WorkerIdentity, WorkerRepository
from shared.domain import transitions as t
from shared.domain.enums import TaskPriority
from shared.messaging.topology import dead_letter_queue_name
from shared.settings import Settings
from tests.integration.conftest import api_client
from tests.support.services import answers
from tests.support.tasks import create, make_task

pytestmark = pytest.mark.usefixtures("counts_stay_exact")

LOW, MEDIUM, HIGH = TaskPriority.LOW, TaskPriority.MEDIUM, TaskPriority.HIGH
MANAGEMENT_URL = "http://guest:guest@127.0.0.1:15672"


async def finished(repo: TaskRepository, priority: TaskPriority, move: t.Transition) -> uuid.UUID:
    task = await make_task(repo, priority=priority)
    await repo.claim(task.id, lease_s=30)
    await repo.finish(task.id, transition=move, attempt=1)
    return task.id


async def test_summary_counts_every_status_and_priority(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    async with connect(engine) as conn:
        repo = TaskRepository(conn)
        for _ in range(2):
            await make_task(repo, priority=LOW)  # NEW
        await repo.mark_published(await make_task(repo, priority=HIGH))  # PENDING
        await repo.claim((await make_task(repo, priority=MEDIUM)).id, lease_s=30)
        for _ in range(2):
            await finished(repo, MEDIUM, t.COMPLETE)
        await finished(repo, HIGH, t.FAIL)
        await repo.cancel((await make_task(repo, priority=LOW)).id)

    response = await client.get("/api/v1/tasks/stats/summary")

    assert response.status_code == 200
    assert response.json() == {
        "total": 8,
        "by_status": {
            "NEW": 2,
            "PENDING": 1,
            "IN_PROGRESS": 1,
            "COMPLETED": 2,
            "FAILED": 1,
            "CANCELLED": 1,
        },
        "by_priority": {"LOW": 3, "MEDIUM": 3, "HIGH": 2},
    }


async def test_summary_of_no_tasks_lists_every_status_as_zero(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/tasks/stats/summary")).json()

    assert body["total"] == 0
    assert set(body["by_status"]) == {
        "NEW",
        "PENDING",
        "IN_PROGRESS",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
    }
    assert set(body["by_status"].values()) == set(body["by_priority"].values()) == {0}


async def shape(
    engine: AsyncEngine, task_id: uuid.UUID, *, wait_s: float, run_s: float, ago_min: float
) -> None:
    """Give a finished task known timings, and date its finish event `ago_min` back."""
    created = datetime.now(UTC) - timedelta(hours=1)
    started = created + timedelta(seconds=wait_s)
    async with engine.connect() as conn:
        await conn.execute(
            update(tasks)
            .where(tasks.c.id == task_id)
            .values(
                created_at=created,
                started_at=started,
                completed_at=started + timedelta(seconds=run_s),
            )
        )
        await conn.execute(
            update(task_events)
            .where(task_events.c.task_id == task_id, task_events.c.to_status.in_(FINISHED))
            .values(at=task_events.c.at - timedelta(minutes=ago_min))
        )


@pytest.fixture
async def management_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An API that reads unacknowledged counts from RabbitMQ's management API."""
    if not answers(MANAGEMENT_URL):
        pytest.skip("RabbitMQ's management plugin is not enabled (.ci/run enables it)")
    configured = settings.model_copy(update={"broker_management_url": MANAGEMENT_URL})
    async with api_client(configured) as client:
        yield client


async def test_stats_add_throughput_durations_waits_queues_and_workers(
    management_client: httpx.AsyncClient,
    engine: AsyncEngine,
    channel: AbstractChannel,
    settings: Settings,
) -> None:
    async with connect(engine) as conn:
        repo = TaskRepository(conn)
        now = await finished(repo, LOW, t.COMPLETE)
        three_min_ago = await finished(repo, LOW, t.COMPLETE)
        ten_min_ago = await finished(repo, HIGH, t.FAIL)
        an_hour_ago = await finished(repo, HIGH, t.COMPLETE)  # outside every window
        await WorkerRepository(conn).register(
            WorkerIdentity("w-1", "host", 1, settings.queue_name, 2, heartbeat_seconds=5)
        )
    await shape(engine, now, wait_s=2, run_s=1, ago_min=0)
    await shape(engine, three_min_ago, wait_s=4, run_s=3, ago_min=3)
    await shape(engine, ten_min_ago, wait_s=6, run_s=5, ago_min=10)
    await shape(engine, an_hour_ago, wait_s=60, run_s=60, ago_min=60)
    for _ in range(2):
        await create(management_client)  # queued: two ready messages
    await channel.default_exchange.publish(
        aio_pika.Message(b"junk"), routing_key=dead_letter_queue_name(settings.queue_name)
    )

    response = await management_client.get("/api/v1/stats")

    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 6 and body["by_status"]["PENDING"] == 2
    assert body["throughput"] == {
        "1m": {"completed_per_minute": 1.0, "failed_per_minute": 0.0},
        "5m": {"completed_per_minute": 2 / 5, "failed_per_minute": 0.0},
        "15m": {"completed_per_minute": 2 / 15, "failed_per_minute": 1 / 15},
    }
    # percentile_cont interpolates: p95 of [1, 3, 5] is 3 + 0.9 * (5 - 3).
    assert body["duration_p50_seconds"] == pytest.approx(3.0)
    assert body["duration_p95_seconds"] == pytest.approx(4.8)
    assert body["duration_max_seconds"] == pytest.approx(5.0)
    assert body["queue_wait_p50_seconds"] == pytest.approx(4.0)
    assert body["queue_wait_p95_seconds"] == pytest.approx(5.8)
    assert (body["queue_ready"], body["dead_letters"]) == (2, 1)
    assert isinstance(body["queue_unacknowledged"], int)
    assert body["workers_online"] == 1


async def test_stats_answer_with_null_queue_figures_while_the_broker_is_away(
    settings: Settings,
) -> None:
    away = settings.model_copy(update={"amqp_url": "amqp://guest:guest@127.0.0.1:1/"})
    async with api_client(away) as client:
        response = await client.get("/api/v1/stats")

    assert response.status_code == 200
    body = response.json()
    assert body["queue_ready"] is None and body["dead_letters"] is None
    assert body["queue_unacknowledged"] is None
    assert body["by_status"]["NEW"] == 0


async def test_api_health_tells_the_version_and_the_server_time(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/v1/health")

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["version"]) == ("ok", __version__)
    server_time = datetime.fromisoformat(body["time"])
    assert abs((server_time - datetime.now(UTC)).total_seconds()) < 5
