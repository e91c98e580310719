"""Every transition writes exactly one history row, in the statement that makes it."""

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import connect
from shared.db.events import EventRepository
from shared.db.tasks import TaskRepository
from shared.domain import transitions as t
from shared.domain.enums import TaskPriority, TaskStatus
from shared.domain.records import TaskEvent, TaskRecord
from tests.support.tasks import URL, create, expire, make_task

pytestmark = pytest.mark.usefixtures("counts_stay_exact")

WORKER = "test-worker-1"


@dataclass(frozen=True)
class Case:
    """How to bring a task to the transition, and the history row it must write."""

    prepare: Callable[[TaskRepository, AsyncEngine], Awaitable[TaskRecord]]
    act: Callable[[TaskRepository, TaskRecord], Awaitable[object]]
    from_status: TaskStatus
    attempt: int
    reason: str | None


async def new(repo: TaskRepository, engine: AsyncEngine) -> TaskRecord:
    return await make_task(repo)


async def running(repo: TaskRepository, engine: AsyncEngine) -> TaskRecord:
    task = await make_task(repo)
    claimed = await repo.claim(task.id, lease_s=30)
    assert claimed is not None
    return claimed


async def published(repo: TaskRepository, engine: AsyncEngine) -> TaskRecord:
    task = await make_task(repo)
    marked = await repo.mark_published(task)
    assert marked is not None
    return marked


async def failed(repo: TaskRepository, engine: AsyncEngine) -> TaskRecord:
    task = await running(repo, engine)
    ended = await repo.finish(
        task.id, transition=t.FAIL, attempt=1, error="ValueError: boom\n\nTraceback: ..."
    )
    assert ended is not None
    return ended


async def lease_ran_out(repo: TaskRepository, engine: AsyncEngine) -> TaskRecord:
    task = await running(repo, engine)
    await expire(engine, task.id)
    return task


CASES = {
    t.PUBLISH: Case(new, lambda r, task: r.mark_published(task), TaskStatus.NEW, 0, None),
    t.CLAIM: Case(new, lambda r, task: r.claim(task.id, lease_s=30), TaskStatus.NEW, 1, None),
    t.COMPLETE: Case(
        running,
        lambda r, task: r.finish(task.id, transition=t.COMPLETE, attempt=1, result={"n": 1}),
        TaskStatus.IN_PROGRESS,
        1,
        None,
    ),
    t.FAIL: Case(
        running,
        lambda r, task: r.finish(task.id, transition=t.FAIL, attempt=1, error="boom"),
        TaskStatus.IN_PROGRESS,
        1,
        "handler raised",
    ),
    t.RETRY: Case(
        running,
        lambda r, task: r.retry(task.id, attempt=1, error="boom", reason="retry in 2.0 s"),
        TaskStatus.IN_PROGRESS,
        1,
        "retry in 2.0 s",
    ),
    t.CANCEL_QUEUED: Case(
        new, lambda r, task: r.cancel(task.id), TaskStatus.NEW, 0, "cancelled by request"
    ),
    t.REQUEST_CANCEL: Case(
        running, lambda r, task: r.cancel(task.id), TaskStatus.IN_PROGRESS, 1, "cancel requested"
    ),
    t.CANCEL_RUNNING: Case(
        running,
        lambda r, task: r.finish(task.id, transition=t.CANCEL_RUNNING, attempt=1),
        TaskStatus.IN_PROGRESS,
        1,
        "cancelled by request",
    ),
    t.RELEASE: Case(
        running,
        lambda r, task: r.release(task.id, attempt=1),
        TaskStatus.IN_PROGRESS,
        1,
        "handed back at shutdown",
    ),
    t.REPRIORITIZE: Case(
        published,
        lambda r, task: r.update(task.id, priority=TaskPriority.HIGH),
        TaskStatus.PENDING,
        0,
        "priority MEDIUM → HIGH",
    ),
    t.RERUN: Case(
        failed,
        lambda r, task: r.rerun(task.id),
        TaskStatus.FAILED,
        1,
        "retry requested; was FAILED: ValueError: boom",
    ),
    t.EDIT: Case(
        running,
        lambda r, task: r.update(task.id, title="renamed"),
        TaskStatus.IN_PROGRESS,
        1,
        "edited",
    ),
    t.LOSE: Case(
        lease_ran_out,
        lambda r, task: r.reap(task, transition=t.LOSE),
        TaskStatus.IN_PROGRESS,
        1,
        "lease expired",
    ),
}


def test_every_transition_in_the_table_has_a_case() -> None:
    assert set(CASES) == set(t.ALL)


async def events_of(engine: AsyncEngine, task_id: uuid.UUID) -> list[TaskEvent]:
    async with connect(engine) as conn:
        return await EventRepository(conn).of_task(task_id)


@pytest.mark.parametrize("move", t.ALL, ids=[move.name for move in t.ALL])
async def test_a_transition_writes_exactly_one_history_row(
    engine: AsyncEngine, move: t.Transition
) -> None:
    case = CASES[move]
    async with connect(engine) as conn:
        repo = TaskRepository(conn, worker_id=WORKER)
        task = await case.prepare(repo, engine)
        before = await events_of(engine, task.id)

        await case.act(repo, task)

    after = await events_of(engine, task.id)
    [event] = after[len(before) :]
    assert after[: len(before)] == before
    assert (event.from_status, event.to_status) == (
        case.from_status,
        move.target or case.from_status,
    )
    assert (event.attempt, event.reason, event.worker_id) == (case.attempt, case.reason, WORKER)


async def test_a_refused_transition_writes_no_history_row(engine: AsyncEngine) -> None:
    async with connect(engine) as conn:
        repo = TaskRepository(conn)
        task = await make_task(repo)
        before = await events_of(engine, task.id)

        refused = await repo.finish(task.id, transition=t.COMPLETE, attempt=1)

    assert refused is None
    assert await events_of(engine, task.id) == before


async def test_the_api_lists_a_tasks_history_oldest_first(client: httpx.AsyncClient) -> None:
    task_id = await create(client)
    await client.delete(f"{URL}/{task_id}")

    response = await client.get(f"{URL}/{task_id}/events")

    assert response.status_code == 200
    items = response.json()["items"]
    moves = [(e["from_status"], e["to_status"], e["reason"]) for e in items]
    assert moves == [
        (None, "NEW", "created"),
        ("NEW", "PENDING", None),
        ("PENDING", "CANCELLED", "cancelled by request"),
    ]
    assert [e["id"] for e in items] == sorted(e["id"] for e in items)
    assert all(e["worker_id"] is None and e["attempt"] == 0 for e in items)


async def test_the_history_of_an_unknown_task_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{URL}/{uuid.uuid4()}/events")

    assert response.status_code == 404
    assert "not found" in response.json()["detail"]
