"""Changing a task after it is created: PATCH/PUT of title, description and priority, and
re-prioritising queued tasks without ever running one at a stale priority or twice."""

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import connect
from shared.db.tasks import TaskRepository
from shared.domain import transitions as t
from shared.domain.enums import TaskPriority, TaskStatus
from shared.domain.errors import TaskRunning
from shared.messaging import messages
from shared.settings import Settings
from tests.integration.conftest import api_client
from tests.support.processes import StartWorker, free_port
from tests.support.proxy import TcpProxy, through
from tests.support.tasks import URL, create, make_task, wait_all_terminal, wait_log
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("counts_stay_exact")


async def history(client: httpx.AsyncClient, task_id: uuid.UUID) -> list[Any]:
    return [
        (e["from_status"], e["to_status"], e["reason"])
        for e in (await client.get(f"{URL}/{task_id}/events")).json()["items"]
    ]


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
async def test_a_queued_task_takes_a_new_title_and_priority_and_is_queued_again_at_it(
    client: httpx.AsyncClient, channel: AbstractChannel, settings: Settings, method: str
) -> None:
    task_id = await create(client, priority="LOW", description="old")

    response = await client.request(
        method, f"{URL}/{task_id}", json={"title": "renamed", "priority": "HIGH"}
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["title"], body["description"], body["priority"]) == ("renamed", "old", "HIGH")
    assert body["status"] == "PENDING"
    assert (await history(client, task_id))[-2:] == [
        ("PENDING", "NEW", "priority LOW → HIGH"),
        ("NEW", "PENDING", None),
    ]
    queue = await channel.get_queue(settings.queue_name)
    first, second = await queue.get(timeout=5), await queue.get(timeout=5)
    assert first is not None and second is not None
    await first.ack()
    await second.ack()
    # The new dispatch leaves first, at its priority; the old one is still queued, but stale.
    assert first.priority == TaskPriority.HIGH.broker_priority
    assert messages.decode_dispatched(first.body) == messages.Dispatched(task_id, 1)
    assert messages.decode_dispatched(second.body) == messages.Dispatched(task_id, 0)


async def test_a_running_task_may_be_renamed_but_not_re_prioritised_and_a_finished_one_not_at_all(
    client: httpx.AsyncClient, repo: TaskRepository
) -> None:
    running, finished = await create(client), await create(client)
    await repo.claim(running, lease_s=30)
    claimed = await repo.claim(finished, lease_s=30)
    assert claimed is not None
    await repo.finish(finished, transition=t.COMPLETE, attempt=claimed.attempts)

    renamed = await client.patch(f"{URL}/{running}", json={"description": "still going"})
    reprioritised = await client.patch(f"{URL}/{running}", json={"priority": "HIGH"})
    done = await client.patch(f"{URL}/{finished}", json={"title": "too late"})

    assert renamed.status_code == 200 and renamed.json()["description"] == "still going"
    assert renamed.json()["status"] == "IN_PROGRESS"
    assert reprioritised.status_code == 409 and "running" in reprioritised.json()["detail"]
    assert done.status_code == 409 and "COMPLETED" in done.json()["detail"]
    assert (await history(client, running))[-1] == ("IN_PROGRESS", "IN_PROGRESS", "edited")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"status": "COMPLETED"},
        {"kind": "fail"},
        {"params": {}},
        {"title": ""},
        {"priority": "x"},
    ],
    ids=["empty", "status", "kind", "params", "empty title", "bad priority"],
)
async def test_an_update_that_changes_nothing_allowed_is_refused_with_422(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    task_id = await create(client)

    response = await client.patch(f"{URL}/{task_id}", json=body)

    assert response.status_code == 422 and response.json()["detail"]


async def test_a_low_task_raised_to_high_starts_before_every_other_low(
    client: httpx.AsyncClient, engine: AsyncEngine, workers: StartWorker
) -> None:
    backlog = [await create(client, priority="LOW", params={"duration": 0.1}) for _ in range(10)]
    raised = backlog[-1]  # the last to arrive, so arrival order cannot explain it
    assert (await client.patch(f"{URL}/{raised}", json={"priority": "HIGH"})).status_code == 200
    port = free_port()
    # One message at a time: at prefetch 2 the broker hands over the HIGH one and a LOW one
    # together, and either claim may be the first to find a pooled connection.
    worker = await workers(WORKER_METRICS_PORT=str(port), WORKER_PREFETCH="1")

    done = {task.id: task for task in await wait_all_terminal(engine, len(backlog))}

    assert all(task.status is TaskStatus.COMPLETED and task.attempts == 1 for task in done.values())
    others = [task.started_at for task_id, task in done.items() if task_id != raised]
    started = done[raised].started_at
    assert started is not None and all(other is not None and started <= other for other in others)
    await wait_log(worker, f"task {raised}: stale message (dispatch 0, current 1)")
    async with httpx.AsyncClient() as http:
        scraped = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    assert "taskq_worker_stale_messages_total 1.0" in scraped


async def test_a_high_task_lowered_to_low_does_not_start_before_the_high_ones_ahead(
    client: httpx.AsyncClient, engine: AsyncEngine, workers: StartWorker
) -> None:
    lowered = await create(client, priority="HIGH", params={"duration": 0.1})
    ahead = [await create(client, priority="HIGH", params={"duration": 0.1}) for _ in range(6)]
    assert (await client.patch(f"{URL}/{lowered}", json={"priority": "LOW"})).status_code == 200
    worker = await workers()

    done = {task.id: task for task in await wait_all_terminal(engine, len(ahead) + 1)}

    assert all(task.status is TaskStatus.COMPLETED and task.attempts == 1 for task in done.values())
    high_starts = [done[task_id].started_at for task_id in ahead]
    started = done[lowered].started_at
    assert started is not None and all(high is not None and started >= high for high in high_starts)
    await wait_log(worker, f"task {lowered}: stale message (dispatch 0, current 1)")


async def test_a_priority_change_racing_the_claim_lets_exactly_one_of_them_win(
    engine: AsyncEngine, repo: TaskRepository
) -> None:
    outcomes = {"claim won": 0, "change won": 0}
    for _ in range(40):
        task = await make_task(repo)
        await repo.mark_published(task)

        async def claim(task_id: uuid.UUID = task.id) -> object:
            async with connect(engine) as conn:
                return await TaskRepository(conn).claim(task_id, lease_s=30, generation=0)

        async def change(task_id: uuid.UUID = task.id) -> object:
            async with connect(engine) as conn:
                try:
                    return await TaskRepository(conn).update(task_id, priority=TaskPriority.HIGH)
                except TaskRunning:
                    return None

        claimed, changed = await asyncio.gather(claim(), change())

        assert (claimed is None) != (changed is None)  # exactly one of them
        stored = await repo.get(task.id)
        if claimed is not None:
            outcomes["claim won"] += 1
            assert (stored.status, stored.priority) == (TaskStatus.IN_PROGRESS, TaskPriority.MEDIUM)
        else:
            outcomes["change won"] += 1
            assert (stored.status, stored.dispatch_generation) == (TaskStatus.NEW, 1)
            # The old message can no longer start it; the new dispatch can, once.
            assert await repo.claim(task.id, lease_s=30, generation=0) is None
            assert await repo.claim(task.id, lease_s=30, generation=1) is not None
    assert sum(outcomes.values()) == 40


async def test_a_failed_task_and_a_cancelled_one_run_again_on_retry(
    client: httpx.AsyncClient, engine: AsyncEngine, workers: StartWorker
) -> None:
    broken = await create(client, kind="flaky", params={"fail_times": 1})
    cancelled = await create(client, params={"duration": 0})
    await client.delete(f"{URL}/{cancelled}")
    await workers()
    [first] = [t for t in await wait_all_terminal(engine, 2) if t.id == broken]
    assert first.status is TaskStatus.FAILED

    retried = await client.post(f"{URL}/{broken}/retry")
    again = await client.post(f"{URL}/{cancelled}/retry", json={"priority": "HIGH"})

    assert retried.status_code == again.status_code == 200
    assert again.json()["priority"] == "HIGH"
    done = {t.id: t for t in await wait_all_terminal(engine, 2)}
    assert done[broken].status is TaskStatus.COMPLETED and done[broken].attempts == 2
    assert done[broken].result == {"succeeded_on_attempt": 2}
    assert done[cancelled].status is TaskStatus.COMPLETED and done[cancelled].attempts == 1
    moves = await history(client, broken)
    assert [m[1] for m in moves].count("IN_PROGRESS") == 2  # both attempts
    [why] = [reason for before, after, reason in moves if (before, after) == ("FAILED", "NEW")]
    assert why == "retry requested; was FAILED: SimulatedFailure: planned failure 1 of 1"


async def test_only_a_failed_or_cancelled_task_can_be_retried(client: httpx.AsyncClient) -> None:
    queued = await create(client)

    response = await client.post(f"{URL}/{queued}/retry")

    assert response.status_code == 409 and "only a FAILED or CANCELLED" in response.json()["detail"]


async def test_a_broken_task_retried_fails_again_and_its_history_shows_both_attempts(
    client: httpx.AsyncClient, engine: AsyncEngine, workers: StartWorker
) -> None:
    broken = await create(client, kind="fail", params={"message": "still broken"})
    await workers()
    await wait_all_terminal(engine, 1)

    assert (await client.post(f"{URL}/{broken}/retry")).status_code == 200

    async def failed_twice() -> Any:
        body = (await client.get(f"{URL}/{broken}")).json()
        return body if body["status"] == "FAILED" and body["attempts"] == 2 else None

    await wait_until(failed_twice, timeout_s=15, what="the second attempt failed")
    moves = await history(client, broken)
    assert [after for _, after, _ in moves].count("IN_PROGRESS") == 2
    assert [after for _, after, _ in moves].count("FAILED") == 2


async def test_a_priority_changed_while_the_broker_is_away_is_published_when_it_returns(
    engine: AsyncEngine, workers: StartWorker, settings: Settings, broker_proxy: TcpProxy
) -> None:
    async with api_client(through(settings, broker=broker_proxy)) as client:
        task_id = await create(client, priority="LOW", params={"duration": 0})
        await broker_proxy.cut()

        changed = await client.patch(f"{URL}/{task_id}", json={"priority": "HIGH"})

        assert changed.status_code == 200
        assert (changed.json()["status"], changed.json()["priority"]) == ("NEW", "HIGH")
        await broker_proxy.restore()
        await workers()
        [task] = await wait_all_terminal(engine, 1, timeout_s=30)

    assert task.status is TaskStatus.COMPLETED and task.attempts == 1
    assert (task.priority, task.dispatch_generation) == (TaskPriority.HIGH, 1)
