"""POST /api/v1/tasks: what is stored, what is published, and what is refused."""

import json
import time
import uuid
from typing import Any

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractChannel

from shared.db.tasks import TaskRepository
from shared.domain.enums import TaskPriority
from shared.domain.keys import new_key
from shared.settings import Settings
from tests.integration.conftest import api_client

URL = "/api/v1/tasks"


async def test_created_task_is_stored_published_and_pending(
    client: httpx.AsyncClient, repo: TaskRepository
) -> None:
    response = await client.post(URL, json={"title": "Resize", "description": "all of them"})

    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"{URL}/{body['id']}"
    assert body["status"] == "PENDING"
    assert body["priority"] == "MEDIUM"
    assert body["kind"] == "simulate"
    assert body["params"] == {}
    assert body["attempts"] == 0
    assert body["cancel_requested"] is False
    assert body["started_at"] is None and body["completed_at"] is None
    stored = await repo.get(uuid.UUID(body["id"]))
    assert stored.title == "Resize" and stored.description == "all of them"
    assert stored.status.value == "PENDING"


@pytest.mark.parametrize("priority", list(TaskPriority))
async def test_published_message_carries_id_priority_and_persistence(
    client: httpx.AsyncClient, channel: AbstractChannel, settings: Settings, priority: TaskPriority
) -> None:
    response = await client.post(URL, json={"title": "t", "priority": priority.value})
    task_id = response.json()["id"]

    queue = await channel.get_queue(settings.queue_name)
    message = await queue.get(timeout=5)
    assert message is not None
    await message.ack()

    assert json.loads(message.body) == {"task_id": task_id, "generation": 0}
    assert message.priority == priority.broker_priority
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == task_id
    assert message.content_type == "application/json"


async def test_higher_priorities_leave_the_queue_first(
    client: httpx.AsyncClient, channel: AbstractChannel, settings: Settings
) -> None:
    for priority in ("LOW", "MEDIUM", "HIGH", "LOW", "HIGH"):
        await client.post(URL, json={"title": priority, "priority": priority})

    queue = await channel.get_queue(settings.queue_name)
    order = []
    for _ in range(5):
        message = await queue.get(timeout=5)
        assert message is not None
        await message.ack()
        assert message.priority is not None
        order.append(message.priority)
    assert order == sorted(order, reverse=True)


async def test_params_are_stored_as_validated(client: httpx.AsyncClient) -> None:
    response = await client.post(
        URL, json={"title": "t", "kind": "fail", "params": {"message": "boom"}}
    )
    assert response.status_code == 201
    assert response.json()["params"] == {"message": "boom"}


INVALID_BODIES: list[tuple[str, Any]] = [
    ("missing title", {}),
    ("empty title", {"title": ""}),
    ("title too long", {"title": "x" * 201}),
    ("title not a string", {"title": 5}),
    ("description too long", {"title": "t", "description": "x" * 10_001}),
    ("unknown priority", {"title": "t", "priority": "URGENT"}),
    ("lower-case priority", {"title": "t", "priority": "high"}),
    ("unknown field", {"title": "t", "owner": "me"}),
    ("unknown kind", {"title": "t", "kind": "mine-bitcoin"}),
    ("params not an object", {"title": "t", "params": [1, 2]}),
    ("param the kind lacks", {"title": "t", "params": {"sleep": 1}}),
    ("duration below range", {"title": "t", "params": {"duration": -1}}),
    ("duration above range", {"title": "t", "params": {"duration": 601}}),
    ("duration not a number", {"title": "t", "params": {"duration": "long"}}),
    ("body not an object", ["title"]),
    ("NUL in the title", {"title": "a\u0000b"}),
    ("NUL in a param", {"title": "t", "kind": "fail", "params": {"message": "\u0000"}}),
]


@pytest.mark.parametrize(("case", "body"), INVALID_BODIES, ids=[c for c, _ in INVALID_BODIES])
async def test_invalid_body_is_refused_with_422_and_nothing_stored(
    client: httpx.AsyncClient, case: str, body: Any
) -> None:
    response = await client.post(URL, json=body)

    assert response.status_code == 422, case
    assert response.json()["detail"]
    assert (await client.get(URL)).json()["total"] == 0


async def test_malformed_json_is_refused_with_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        URL, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"]


async def test_body_over_one_mebibyte_is_refused_with_413(client: httpx.AsyncClient) -> None:
    body = json.dumps({"title": "t", "description": "x" * (1024 * 1024)}).encode()
    response = await client.post(URL, content=body, headers={"content-type": "application/json"})

    assert response.status_code == 413
    assert "exceeds" in response.json()["detail"]


async def test_streamed_body_over_one_mebibyte_is_refused_with_413(
    client: httpx.AsyncClient,
) -> None:
    async def chunks() -> Any:
        for _ in range(5):
            yield b"x" * 300_000

    response = await client.post(
        URL, content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


async def test_broker_down_still_stores_the_task_as_new_quickly(settings: Settings) -> None:
    # Nothing listens on this port: the publisher can never connect.
    unreachable = settings.model_copy(update={"amqp_url": "amqp://guest:guest@127.0.0.1:1/"})
    async with api_client(unreachable, wait_for_broker=False) as client:
        started = time.monotonic()
        response = await client.post(URL, json={"title": "kept"})
        elapsed_s = time.monotonic() - started
        stored = await client.get(response.headers["location"])

    assert response.status_code == 201
    assert response.json()["status"] == "NEW"
    assert stored.json()["status"] == "NEW"
    assert elapsed_s < unreachable.publish_timeout_seconds + 1


async def test_database_down_answers_503_with_a_json_detail(settings: Settings) -> None:
    unreachable = settings.model_copy(
        update={"database_url": "postgresql+asyncpg://postgres@127.0.0.1:1/none"}
    )
    # No key can be checked either: the database that holds them is away.
    async with api_client(unreachable, key=new_key()) as client:
        created = await client.post(URL, json={"title": "t"})
        listed = await client.get(URL)

    for response in (created, listed):
        assert response.status_code == 503
        assert "database" in response.json()["detail"]


async def test_timeout_beyond_the_broker_ack_timeout_is_refused(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    too_long = settings.max_task_timeout_seconds + 1
    response = await client.post(URL, json={"title": "t", "timeout_seconds": too_long})

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "timeout_seconds"]


async def test_retries_and_timeout_are_stored_with_defaults(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    default = (await client.post(URL, json={"title": "t"})).json()
    chosen = (
        await client.post(URL, json={"title": "t", "max_retries": 3, "timeout_seconds": 5})
    ).json()

    assert (default["max_retries"], default["timeout_seconds"]) == (
        0,
        settings.task_timeout_seconds,
    )
    assert (chosen["max_retries"], chosen["timeout_seconds"]) == (3, 5)
