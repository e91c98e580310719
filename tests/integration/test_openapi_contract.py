"""Schemathesis against the served OpenAPI schema: no 5xx, nothing the schema does not declare,
with a valid key; and without one, 401 from every route under /api/v1."""

import asyncio
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from api.main import create_app
from shared.domain.enums import Role
from shared.domain.errors import NotAuthenticated
from shared.settings import Settings
from tests.support.processes import Process, free_port, start_api, wait_ready
from tests.support.users import auth, make_user


@pytest.fixture(scope="module")
def api_url(settings: Settings) -> Iterator[str]:
    """The API as a real uvicorn process."""
    port = free_port()
    # Webhooks configured, and private networks allowed so that no URL schemathesis makes
    # up is resolved (nothing here delivers: no notifier runs).
    webhooks = {"SECRET_KEY": "contract-" + "k" * 32, "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true"}
    process: Process = start_api(settings, port, **webhooks)
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(wait_ready(process, url))
        yield url
    finally:
        process.stop()


# The schema the app generates is the one it serves at /openapi.json. The event stream is
# left out: a valid request to it never ends (tests/integration/test_event_stream.py).
schema = schemathesis.openapi.from_dict(create_app().openapi()).exclude(path="/api/v1/events")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture
async def admin_key(engine: AsyncEngine) -> str:
    _, key = await make_user(engine, Role.ADMIN)
    return key


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_honours_its_openapi_schema(
    case: schemathesis.Case[Any], api_url: str, admin_key: str
) -> None:
    case.call_and_validate(base_url=api_url, headers=auth(admin_key), checks=CHECKS)


OPEN_PATHS = {"/api/v1/health"}


async def test_every_route_under_api_v1_refuses_a_request_without_a_key(api_url: str) -> None:
    operations = [
        (method.upper(), path)
        for path, methods in create_app().openapi()["paths"].items()
        if path.startswith("/api/v1") and path not in OPEN_PATHS
        for method in methods
    ]
    async with httpx.AsyncClient(base_url=api_url) as client:
        for method, path in operations:
            concrete = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
            for headers in ({}, {"X-API-Key": "tq_" + "x" * 43}, {"Authorization": "Bearer nope"}):
                response = await client.request(method, concrete, headers=headers, json={})
                assert response.status_code == 401, (method, path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
                assert response.json() == {"detail": NotAuthenticated().args[0]}
    assert len(operations) >= 15
