"""DELETE /api/v1/tasks/{id} cancels; it never erases."""

import uuid

import httpx

from shared.db.tasks import TaskRepository
from shared.domain import transitions as t
from tests.support.tasks import URL, create


async def test_queued_task_is_cancelled_at_once(client: httpx.AsyncClient) -> None:
    task_id = await create(client)

    response = await client.delete(f"{URL}/{task_id}")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "CANCELLED" and body["cancel_requested"] is True
    assert body["completed_at"] is not None and body["started_at"] is None
    assert (await client.get(f"{URL}/{task_id}")).json()["status"] == "CANCELLED"


async def test_cancelling_twice_is_idempotent(client: httpx.AsyncClient) -> None:
    task_id = await create(client)
    first = await client.delete(f"{URL}/{task_id}")

    second = await client.delete(f"{URL}/{task_id}")

    assert second.status_code == 200
    assert second.json() == first.json()


async def test_running_task_is_flagged_and_answers_202(
    client: httpx.AsyncClient, repo: TaskRepository
) -> None:
    task_id = await create(client)
    await repo.claim(task_id, lease_s=30)

    response = await client.delete(f"{URL}/{task_id}")

    assert response.status_code == 202
    assert response.json()["status"] == "IN_PROGRESS"
    assert response.json()["cancel_requested"] is True


async def test_finished_task_cannot_be_cancelled(
    client: httpx.AsyncClient, repo: TaskRepository
) -> None:
    for outcome in (t.COMPLETE, t.FAIL):
        task_id = await create(client)
        claimed = await repo.claim(task_id, lease_s=30)
        assert claimed is not None
        await repo.finish(task_id, transition=outcome, attempt=claimed.attempts)

        response = await client.delete(f"{URL}/{task_id}")

        assert response.status_code == 409
        assert str(outcome.target) in response.json()["detail"]


async def test_cancelling_an_unknown_task_is_404(client: httpx.AsyncClient) -> None:
    response = await client.delete(f"{URL}/{uuid.uuid4()}")
    assert response.status_code == 404


async def test_asking_a_running_task_to_cancel_twice_records_one_request(
    client: httpx.AsyncClient, repo: TaskRepository
) -> None:
    task_id = await create(client)
    await repo.claim(task_id, lease_s=30)

    first = await client.delete(f"{URL}/{task_id}")
    second = await client.delete(f"{URL}/{task_id}")

    assert first.status_code == second.status_code == 202
    events = (await client.get(f"{URL}/{task_id}/events")).json()["items"]
    assert [e["reason"] for e in events].count("cancel requested") == 1


async def test_cancel_by_post_answers_exactly_as_delete(
    client: httpx.AsyncClient, repo: TaskRepository
) -> None:
    queued, running, finished = [await create(client) for _ in range(3)]
    await repo.claim(running, lease_s=30)
    claimed = await repo.claim(finished, lease_s=30)
    assert claimed is not None
    await repo.finish(finished, transition=t.COMPLETE, attempt=claimed.attempts)

    codes = [
        (await client.post(f"{URL}/{task_id}/cancel")).status_code
        for task_id in (queued, running, finished, uuid.uuid4())
    ]

    assert codes == [200, 202, 409, 404]
    assert (await client.get(f"{URL}/{queued}")).json()["status"] == "CANCELLED"
