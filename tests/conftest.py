"""Session fixtures, as a short chain: services -> throwaway database and queue -> settings."""

import uuid
from collections.abc import Iterator

import pytest

from shared.settings import Settings
from tests.support.databases import alembic, create_database, drop_database
from tests.support.services import Services, find_services


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    with find_services() as found:
        yield found


@pytest.fixture(scope="session")
def database_url(services: Services) -> Iterator[str]:
    """A migrated database of this test run's own, dropped afterwards."""
    name = f"taskq_test_{uuid.uuid4().hex[:12]}"
    url = create_database(services.admin_database_url, name)
    try:
        alembic(url, "upgrade", "head")
        yield url
    finally:
        drop_database(services.admin_database_url, name)


@pytest.fixture(scope="session")
def queue_name() -> str:
    return f"taskq_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def settings(services: Services, database_url: str, queue_name: str) -> Settings:
    return Settings(
        database_url=database_url,
        amqp_url=services.amqp_url,
        queue_name=queue_name,
        simulate_min_seconds=0,
        simulate_max_seconds=0.1,
        publish_timeout_seconds=1,
        db_connect_timeout_seconds=1,
    )
