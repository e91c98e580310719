"""Owner scoping: nobody sees or touches a task that is not theirs, by any route."""

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from api.main import create_app
from shared.db.tasks import TaskRepository
from shared.domain import transitions as t
from shared.domain.enums import Role
from shared.settings import Settings
from tests.integration.conftest import api_client
from tests.support.tasks import URL, create
from tests.support.users import make_user

TASK_ROUTE = re.compile(r"\{task_id\}")
# A valid body for routes that take one, so that a refusal can only come from scoping.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/api/v1/tasks/{task_id}"): {"priority": "HIGH", "title": "bob's now"},
    ("PUT", "/api/v1/tasks/{task_id}"): {"priority": "HIGH", "title": "bob's now"},
}


@pytest.fixture
async def members(
    settings: Settings, engine: AsyncEngine
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, httpx.AsyncClient]]:
    """(alice, bob, an admin), each a client sending their own key."""
    _, alice_key = await make_user(engine, Role.MEMBER, "alice")
    _, bob_key = await make_user(engine, Role.MEMBER, "bob")
    async with (
        api_client(settings) as admin,
        api_client(settings, alice_key) as alice,
        api_client(settings, bob_key) as bob,
    ):
        yield alice, bob, admin


def task_routes() -> list[tuple[str, str]]:
    paths = create_app().openapi()["paths"]
    return [
        (method.upper(), path)
        for path, methods in paths.items()
        if TASK_ROUTE.search(path)
        for method in methods
    ]


async def test_another_members_task_answers_exactly_like_an_unknown_id_on_every_route(
    members: tuple[httpx.AsyncClient, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    alice, bob, _ = members
    routes = task_routes()
    assert len(routes) >= 4  # get, status, events, cancel at the least

    for method, path in routes:
        theirs = await create(alice)
        unknown = uuid.uuid4()
        body = BODIES.get((method, path))
        foreign, missing = [
            await bob.request(method, TASK_ROUTE.sub(str(task_id), path), json=body)
            for task_id in (theirs, unknown)
        ]

        assert foreign.status_code == missing.status_code == 404, (method, path)
        assert foreign.json() == {
            "detail": missing.json()["detail"].replace(str(unknown), str(theirs))
        }
        still = await alice.get(f"{URL}/{theirs}")
        assert still.json()["status"] == "PENDING", (method, path)  # bob changed nothing


async def test_members_list_and_count_only_their_own_tasks_admins_all(
    members: tuple[httpx.AsyncClient, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    alice, bob, admin = members
    alices = {str(await create(alice)) for _ in range(3)}
    bobs = {str(await create(bob)) for _ in range(2)}
    bob_id = (await bob.get("/api/v1/users/me")).json()["id"]

    seen_by = {
        "alice": {t["id"] for t in (await alice.get(URL)).json()["items"]},
        "bob": {t["id"] for t in (await bob.get(URL)).json()["items"]},
        "admin": {t["id"] for t in (await admin.get(URL)).json()["items"]},
        "admin, bob's": {
            t["id"] for t in (await admin.get(URL, params={"owner": bob_id})).json()["items"]
        },
        "alice asking for bob's": {
            t["id"] for t in (await alice.get(URL, params={"owner": bob_id})).json()["items"]
        },
    }
    assert seen_by == {
        "alice": alices,
        "bob": bobs,
        "admin": alices | bobs,
        "admin, bob's": bobs,
        "alice asking for bob's": set(),
    }
    for client, total in ((alice, 3), (bob, 2), (admin, 5)):
        summary = (await client.get("/api/v1/tasks/stats/summary")).json()
        stats = (await client.get("/api/v1/stats")).json()
        assert summary["total"] == stats["total"] == total
        assert summary["by_status"]["PENDING"] == total


async def test_only_admins_see_workers_and_users(
    members: tuple[httpx.AsyncClient, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    alice, _, admin = members

    for path in ("/api/v1/workers", "/api/v1/users"):
        refused = await alice.get(path)
        assert refused.status_code == 403, path
        assert refused.json()["detail"] == "Only an admin may do this."
        assert (await admin.get(path)).status_code == 200


async def test_an_admin_may_cancel_a_members_task_and_the_history_says_who(
    members: tuple[httpx.AsyncClient, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    alice, _, admin = members
    task_id = await create(alice)
    admin_id = (await admin.get("/api/v1/users/me")).json()["id"]
    alice_id = (await alice.get("/api/v1/users/me")).json()["id"]

    cancelled = await admin.delete(f"{URL}/{task_id}")

    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    events = (await alice.get(f"{URL}/{task_id}/events")).json()["items"]
    assert [(e["to_status"], e["user_id"]) for e in events] == [
        ("NEW", alice_id),
        ("PENDING", alice_id),
        ("CANCELLED", admin_id),
    ]


async def test_the_timeline_counts_only_the_callers_finished_tasks_admins_all(
    members: tuple[httpx.AsyncClient, httpx.AsyncClient, httpx.AsyncClient],
    engine: AsyncEngine,
) -> None:
    alice, bob, admin = members
    finished = [await create(alice), await create(alice), await create(bob)]
    async with engine.connect() as conn:
        repo = TaskRepository(conn, worker_id="test-worker")
        for task_id in finished:
            await repo.claim(task_id, lease_s=30)
            await repo.finish(task_id, transition=t.COMPLETE, attempt=1)

    async def completed(client: httpx.AsyncClient) -> int:
        minutes = (await client.get("/api/v1/stats/timeline", params={"minutes": 2})).json()
        return sum(minute["completed"] for minute in minutes["minutes"])

    assert [await completed(c) for c in (alice, bob, admin)] == [2, 1, 3]
