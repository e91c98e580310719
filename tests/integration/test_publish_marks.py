"""Confirmed creates are marked PENDING many per statement, each exactly as if alone."""

import asyncio
import dataclasses

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.tasks import TaskRepository
from shared.domain.enums import TaskStatus
from shared.services.marks import PublishMarks
from tests.support.tasks import make_task

pytestmark = pytest.mark.usefixtures("counts_stay_exact")

PUBLISH_EVENTS = text("""
    SELECT task_id, user_id, xact_id::text AS xact_id FROM task_events
    WHERE from_status = 'NEW' AND to_status = 'PENDING'
""")


async def test_marks_that_arrive_together_share_one_statement_and_each_gets_its_history_row(
    engine: AsyncEngine, repo: TaskRepository
) -> None:
    created = [await make_task(repo) for _ in range(20)]
    marks = PublishMarks(engine)

    marked = await asyncio.gather(*(marks.mark(task) for task in created))

    assert [m.status if m else None for m in marked] == [TaskStatus.PENDING] * 20
    assert [m.id for m in marked if m] == [task.id for task in created]
    async with engine.connect() as conn:
        events = (await conn.execute(PUBLISH_EVENTS)).mappings().all()
    assert sorted(e["task_id"] for e in events) == sorted(task.id for task in created)
    assert {e["user_id"] for e in events} == {task.owner_id for task in created}
    # All twenty were waiting before the statement went out: one transaction wrote them.
    assert len({e["xact_id"] for e in events}) == 1


async def test_a_task_a_worker_took_or_redispatched_is_not_marked_while_the_rest_are(
    engine: AsyncEngine, repo: TaskRepository
) -> None:
    claimed, stale, fine = [await make_task(repo) for _ in range(3)]
    assert await repo.claim(claimed.id, lease_s=30) is not None
    marks = PublishMarks(engine)
    # An older dispatch than the task's current one: its confirm must not mark it.
    outdated = dataclasses.replace(stale, dispatch_generation=7)

    results = await asyncio.gather(marks.mark(claimed), marks.mark(outdated), marks.mark(fine))

    assert results[0] is None and results[1] is None
    assert results[2] is not None and results[2].status is TaskStatus.PENDING
    assert (await repo.get(stale.id)).status is TaskStatus.NEW
    assert (await repo.get(claimed.id)).status is TaskStatus.IN_PROGRESS
