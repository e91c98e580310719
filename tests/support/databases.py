"""Throwaway databases for tests, the soak and the benchmark."""

import asyncio
import os
import subprocess
import sys

import asyncpg
from sqlalchemy.engine import make_url

from tests.support.processes import ROOT


def plain_dsn(url: str) -> str:
    """asyncpg wants postgresql://, SQLAlchemy wants postgresql+asyncpg://."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(admin_url: str, statement: str) -> None:
    conn = await asyncpg.connect(plain_dsn(admin_url))
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
