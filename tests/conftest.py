"""Session fixtures, as a short chain: services -> throwaway database and queue -> settings."""

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from shared.settings import Settings
from tests.support.processes import ROOT
from tests.support.services import Services, find_services


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    with find_services() as found:
        yield found


def _plain_dsn(url: str) -> str:
    """asyncpg wants postgresql://, SQLAlchemy wants postgresql+asyncpg://."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(admin_url: str, statement: str) -> None:
    conn = await asyncpg.connect(_plain_dsn(admin_url))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def create_database(admin_url: str, name: str) -> str:
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def alembic(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the alembic command line, exactly as operators do."""
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        check=True,
    )


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
