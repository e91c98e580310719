"""Guarded transitions hold when writers race: one winner, never a step backwards."""

import asyncio
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.tasks import TaskRepository
from shared.domain import transitions as t
from shared.domain.enums import TaskStatus
from shared.domain.records import TaskRecord
from tests.support.tasks import make_task

# Every transition these tests cause keeps the counters equal to count(*).
pytestmark = pytest.mark.usefixtures("counts_stay_exact")


async def on_own_connection(engine: AsyncEngine, task_id: uuid.UUID) -> TaskRecord | None:
    async with engine.connect() as conn:
        return await TaskRepository(conn).claim(task_id, lease_s=30)


async def test_concurrent_claims_start_a_task_exactly_once(
    engine: AsyncEngine, repo: TaskRepository
) -> None:
    task = await make_task(repo)

    claims = await asyncio.gather(*(on_own_connection(engine, task.id) for _ in range(10)))

    winners = [claim for claim in claims if claim is not None]
    assert len(winners) == 1
    assert winners[0].attempts == 1
    assert (await repo.get(task.id)).attempts == 1


async def test_publish_after_a_claim_does_not_move_the_task_back(repo: TaskRepository) -> None:
    task = await make_task(repo)
    await repo.claim(task.id, lease_s=30)

    assert await repo.mark_published(task) is None
    assert (await repo.get(task.id)).status is TaskStatus.IN_PROGRESS


async def test_a_task_cannot_finish_twice(repo: TaskRepository) -> None:
    task = await make_task(repo)
    claimed = await repo.claim(task.id, lease_s=30)
    assert claimed is not None

    first = await repo.finish(task.id, transition=t.COMPLETE, attempt=1, result={"n": 1})
    second = await repo.finish(task.id, transition=t.FAIL, attempt=1, error="late")

    assert first is not None and second is None
    stored = await repo.get(task.id)
    assert stored.status is TaskStatus.COMPLETED and stored.result == {"n": 1}


async def test_a_stale_attempt_cannot_record_its_outcome(repo: TaskRepository) -> None:
    task = await make_task(repo)
    await repo.claim(task.id, lease_s=30)

    assert await repo.finish(task.id, transition=t.COMPLETE, attempt=0) is None
    assert (await repo.get(task.id)).status is TaskStatus.IN_PROGRESS


async def test_cancel_racing_claims_leaves_one_consistent_outcome(
    engine: AsyncEngine, repo: TaskRepository
) -> None:
    for _ in range(20):
        task = await make_task(repo)

        async def cancel(task_id: uuid.UUID = task.id) -> TaskRecord:
            async with engine.connect() as conn:
                return await TaskRepository(conn).cancel(task_id)

        claim, cancelled = await asyncio.gather(on_own_connection(engine, task.id), cancel())

        stored = await repo.get(task.id)
        assert stored.cancel_requested
        if claim is None:  # the cancel came first: never started
            assert stored.status is TaskStatus.CANCELLED and stored.started_at is None
        else:  # the claim came first: running, flagged for its worker to stop
            assert stored.status is TaskStatus.IN_PROGRESS
            assert cancelled.status is TaskStatus.IN_PROGRESS
