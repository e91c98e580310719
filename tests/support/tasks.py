"""Test objects and waits the tests share: tasks made through the API or straight in the
database, and waiting on their state."""

import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aio_pika.abc import AbstractChannel
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.tables import task_counts, tasks
from shared.db.tasks import TaskRepository
from shared.domain.enums import TERMINAL_STATUSES, TaskPriority, TaskStatus
from shared.domain.records import NewTask, TaskRecord
from tests.support.processes import Process
from tests.support.waiting import wait_until

URL = "/api/v1/tasks"


async def create(client: httpx.AsyncClient, **body: Any) -> uuid.UUID:
    """A task made through the API; `body` overrides the defaults."""
    response = await client.post(URL, json={"title": "t", **body})
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["id"])


# The owner of the tasks tests store straight through the repository; every integration
# test starts with this user in place (tests/integration/conftest.py).
TEST_OWNER = uuid.UUID("00000000-0000-4000-8000-00000000000f")


def new_task(**overrides: Any) -> NewTask:
    fields: dict[str, Any] = {
        "owner_id": TEST_OWNER,
        "title": "t",
        "description": "",
        "priority": TaskPriority.MEDIUM,
        "kind": "simulate",
        "params": {},
        "max_retries": 0,
        "timeout_seconds": 60,
    }
    return NewTask(**{**fields, **overrides})


def task_record(**overrides: Any) -> TaskRecord:
    """A task row as read back, for unit tests that need one without a database."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "title": "t",
        "description": "",
        "priority": TaskPriority.MEDIUM,
        "status": TaskStatus.IN_PROGRESS,
        "kind": "simulate",
        "params": {},
        "result": None,
        "error": None,
        "attempts": 1,
        "cancel_requested": False,
        "max_retries": 0,
        "timeout_seconds": 60,
        "lost_attempts": 0,
        "lease_expires_at": None,
        "dispatch_generation": 0,
        "worker_id": None,
        "owner_id": TEST_OWNER,
        "created_at": now,
        "updated_at": now,
        "started_at": now,
        "completed_at": None,
    }
    return TaskRecord(**{**fields, **overrides})


async def make_task(repo: TaskRepository, **overrides: Any) -> TaskRecord:
    """A NEW task stored through the repository (the write path), as the API stores it."""
    return await repo.create(new_task(**overrides))


async def all_tasks(engine: AsyncEngine) -> list[TaskRecord]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(tasks))).mappings().all()
    return [TaskRecord.from_row(row) for row in rows]


async def wait_all_terminal(
    engine: AsyncEngine, count: int, timeout_s: float = 30
) -> list[TaskRecord]:
    async def probe() -> list[TaskRecord]:
        found = await all_tasks(engine)
        done = [task for task in found if task.status in TERMINAL_STATUSES]
        return found if len(done) == count else []

    return await wait_until(probe, timeout_s=timeout_s, what=f"{count} finished tasks")


async def wait_task(
    engine: AsyncEngine, task_id: uuid.UUID, check: Callable[[TaskRecord], bool], what: str
) -> TaskRecord:
    async def probe() -> TaskRecord | None:
        found = [task for task in await all_tasks(engine) if task.id == task_id]
        return found[0] if found and check(found[0]) else None

    return await wait_until(probe, timeout_s=15, what=what)


async def wait_consumers(channel: AbstractChannel, queue_name: str, count: int) -> None:
    """Wait until `count` workers consume the queue: they are ready for work."""

    async def probe() -> bool:
        queue = await channel.declare_queue(queue_name, passive=True)
        return queue.declaration_result.consumer_count == count

    await wait_until(probe, timeout_s=15, what=f"{count} consumer(s) on {queue_name}")


async def wait_log(process: Process, text: str) -> None:
    async def probe() -> bool:
        return text in process.output

    await wait_until(probe, timeout_s=15, what=f"log line {text!r}")


async def expire(engine: AsyncEngine, task_id: uuid.UUID, lost_attempts: int = 0) -> None:
    """Make a running task's lease look run out, as when its worker died."""
    async with engine.connect() as conn:
        await conn.execute(
            update(tasks)
            .where(tasks.c.id == task_id)
            .values(
                lease_expires_at=tasks.c.lease_expires_at - timedelta(minutes=5),
                lost_attempts=lost_attempts,
            )
        )


async def counts_by_status_and_priority(engine: AsyncEngine) -> tuple[Counter[Any], Counter[Any]]:
    """(what the counters say, what count(*) says), per (status, priority), zeros dropped."""
    async with engine.connect() as conn:
        kept = (
            await conn.execute(
                select(
                    task_counts.c.status, task_counts.c.priority, func.sum(task_counts.c.n)
                ).group_by(task_counts.c.status, task_counts.c.priority)
            )
        ).all()
        counted = (
            await conn.execute(
                select(tasks.c.status, tasks.c.priority, func.count()).group_by(
                    tasks.c.status, tasks.c.priority
                )
            )
        ).all()
    return _nonzero(kept), _nonzero(counted)


def _nonzero(rows: Any) -> Counter[Any]:
    return Counter({(status, priority): int(n) for status, priority, n in rows if n})
