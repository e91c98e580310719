"""GET endpoints: listing with filters and pages, one task, and its status."""

import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.tasks import TaskRepository
from shared.domain import transitions as t
from tests.support.tasks import URL, create


async def test_list_is_newest_first_with_total_limit_and_offset(client: httpx.AsyncClient) -> None:
    ids = [str(await create(client, title=f"task {n}")) for n in range(5)]

    first = (await client.get(URL, params={"limit": 2})).json()
    second = (await client.get(URL, params={"limit": 2, "offset": 2})).json()
    last = (await client.get(URL, params={"limit": 2, "offset": 4})).json()

    assert first["total"] == 5 and first["limit"] == 2 and first["offset"] == 0
    listed = [item["id"] for page in (first, second, last) for item in page["items"]]
    assert listed == list(reversed(ids))


async def test_list_filters_by_several_statuses_and_priorities(
    client: httpx.AsyncClient, repo: TaskRepository
) -> None:
    low = str(await create(client, title="low", priority="LOW"))
    high = str(await create(client, title="high", priority="HIGH"))
    running_high = str(await create(client, title="running", priority="HIGH"))
    await repo.claim(uuid.UUID(running_high), lease_s=30)

    by_priority = (await client.get(URL, params={"priority": ["HIGH", "LOW"]})).json()
    by_status = (await client.get(URL, params={"status": "IN_PROGRESS"})).json()
    both = (await client.get(URL, params={"status": ["PENDING"], "priority": "HIGH"})).json()

    assert {i["id"] for i in by_priority["items"]} == {low, high, running_high}
    assert [i["id"] for i in by_status["items"]] == [running_high]
    assert [i["id"] for i in both["items"]] == [high] and both["total"] == 1


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"offset": -1},
        {"status": "DONE"},
        {"priority": "low"},
    ],
)
async def test_bad_list_parameters_are_refused_with_422(
    client: httpx.AsyncClient, params: dict[str, str | int]
) -> None:
    response = await client.get(URL, params=params)
    assert response.status_code == 422
    assert response.json()["detail"]


async def test_get_returns_every_field(client: httpx.AsyncClient) -> None:
    task_id = str(await create(client, title="one"))

    body = (await client.get(f"{URL}/{task_id}")).json()

    assert set(body) == {
        "id",
        "owner_id",
        "title",
        "description",
        "priority",
        "status",
        "kind",
        "params",
        "result",
        "error",
        "attempts",
        "max_retries",
        "timeout_seconds",
        "cancel_requested",
        "created_at",
        "updated_at",
        "started_at",
        "completed_at",
    }
    assert body["id"] == task_id and body["title"] == "one"


@pytest.mark.parametrize("suffix", ["", "/status"])
async def test_unknown_id_is_404_and_malformed_id_is_422(
    client: httpx.AsyncClient, suffix: str
) -> None:
    missing = await client.get(f"{URL}/{uuid.uuid4()}{suffix}")
    malformed = await client.get(f"{URL}/not-a-uuid{suffix}")

    assert missing.status_code == 404
    assert "not found" in missing.json()["detail"]
    assert malformed.status_code == 422


async def test_status_reports_duration_once_started_and_finished(
    client: httpx.AsyncClient, repo: TaskRepository
) -> None:
    task_id = await create(client, title="timed")
    before = (await client.get(f"{URL}/{task_id}/status")).json()
    claimed = await repo.claim(task_id, lease_s=30)
    assert claimed is not None
    await repo.finish(task_id, transition=t.COMPLETE, attempt=claimed.attempts, result={})

    after = (await client.get(f"{URL}/{task_id}/status")).json()

    assert before["status"] == "PENDING" and before["duration_seconds"] is None
    assert set(after) == {
        "id",
        "status",
        "created_at",
        "started_at",
        "completed_at",
        "duration_seconds",
    }
    assert after["status"] == "COMPLETED"
    assert after["duration_seconds"] is not None and after["duration_seconds"] >= 0


async def test_cursor_pages_walk_the_same_list_as_offsets(client: httpx.AsyncClient) -> None:
    ids = [str(await create(client, title=f"task {n}")) for n in range(7)]

    walked, cursor = [], None
    while True:
        params: dict[str, str | int] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(URL, params=params)).json()
        walked += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert walked == list(reversed(ids))
    assert page["total"] == 7 and page["total_is_exact"] is True


async def test_a_malformed_cursor_is_refused_with_422(client: httpx.AsyncClient) -> None:
    response = await client.get(URL, params={"cursor": "not-a-cursor"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


async def test_totals_past_a_thousand_are_flagged_as_estimates(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    me = (await client.get("/api/v1/users/me")).json()["id"]
    async with engine.connect() as conn:
        await conn.execute(
            text(
                "INSERT INTO tasks (owner_id, title, priority, status, kind) "
                "SELECT :me, 'bulk', 'LOW', 'COMPLETED', 'simulate' FROM generate_series(1, 12000)"
            ),
            {"me": me},
        )
        await conn.execute(text("ANALYZE tasks"))

    page = (await client.get(URL, params={"limit": 1})).json()
    filtered = (await client.get(URL, params={"limit": 1, "priority": "HIGH"})).json()

    assert page["total_is_exact"] is False
    assert page["total"] > 10_000  # the planner's estimate, near 12,000
    assert (filtered["total"], filtered["total_is_exact"]) == (0, True)


async def test_a_single_valued_parameter_given_twice_is_refused_and_lists_still_repeat(
    client: httpx.AsyncClient,
) -> None:
    twice = await client.get(URL, params=[("title_prefix", "a"), ("title_prefix", "b")])
    lists = await client.get(URL, params=[("status", "NEW"), ("status", "PENDING")])

    assert twice.status_code == 422
    [error] = twice.json()["detail"]
    assert error["loc"] == ["query", "title_prefix"] and "given 2 times" in error["msg"]
    assert lists.status_code == 200
