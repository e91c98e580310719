"""Schemathesis against the served OpenAPI schema: no 5xx, nothing the schema does not declare."""

import asyncio
from collections.abc import Iterator
from typing import Any

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

from api.main import create_app
from shared.settings import Settings
from tests.support.processes import Process, free_port, start_api, wait_ready


@pytest.fixture(scope="module")
def api_url(settings: Settings) -> Iterator[str]:
    """The API as a real uvicorn process."""
    port = free_port()
    process: Process = start_api(settings, port)
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(wait_ready(process, url))
        yield url
    finally:
        process.stop()


# The schema the app generates is the one it serves at /openapi.json.
schema = schemathesis.openapi.from_dict(create_app().openapi())

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_honours_its_openapi_schema(case: schemathesis.Case[Any], api_url: str) -> None:
    case.call_and_validate(base_url=api_url, checks=CHECKS)
