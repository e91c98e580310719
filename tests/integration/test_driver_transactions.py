"""Transactions begun on the driver (`shared.db.driver.transaction`): what the notifier's
fan-out and outcome records run in. Statements on asyncpg and through SQLAlchemy must
commit or roll back together, and no connection may go back to the pool mid-transaction."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, bindparam, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import driver
from shared.db.engine import connect, create_engine
from shared.settings import Settings


@pytest.fixture
async def probe(engine: AsyncEngine) -> AsyncIterator[Table]:
    table = Table(f"probe_{uuid.uuid4().hex[:12]}", MetaData(), Column("n", Integer))
    async with engine.begin() as conn:
        await conn.run_sync(table.create)
    yield table
    async with engine.begin() as conn:
        await conn.run_sync(table.drop)


async def _rows(engine: AsyncEngine, table: Table) -> list[int]:
    async with connect(engine) as conn:
        return sorted((await conn.execute(select(table.c.n))).scalars().all())


async def test_statements_on_the_driver_and_through_sqlalchemy_commit_together(
    engine: AsyncEngine, probe: Table
) -> None:
    add = insert(probe).values(n=bindparam("value")).returning(probe.c.n)
    async with connect(engine) as conn, driver.transaction(conn):
        await driver.fetch_one(conn, add, {"value": 1})
        await conn.execute(insert(probe).values(n=2))
        async with connect(engine) as other:  # not visible outside before the commit
            assert (await other.execute(select(func.count()).select_from(probe))).scalar() == 0

    assert await _rows(engine, probe) == [1, 2]


async def test_an_error_inside_rolls_back_both_kinds_of_statement(
    engine: AsyncEngine, probe: Table
) -> None:
    add = insert(probe).values(n=bindparam("value")).returning(probe.c.n)
    with pytest.raises(LookupError):
        async with connect(engine) as conn, driver.transaction(conn):
            await driver.fetch_one(conn, add, {"value": 1})
            await conn.execute(insert(probe).values(n=2))
            raise LookupError("something after the writes")

    assert await _rows(engine, probe) == []


async def test_a_transaction_cancelled_midway_leaves_its_connection_outside_any_transaction(
    settings: Settings, probe: Table
) -> None:
    one = create_engine(settings, pool_size=1)  # the next checkout gets the same connection
    started = asyncio.Event()

    async def stuck() -> None:
        async with connect(one) as conn, driver.transaction(conn):
            await conn.execute(insert(probe).values(n=1))
            started.set()
            await conn.execute(text("SELECT pg_sleep(30)"))

    try:
        attempt = asyncio.create_task(stuck())
        await started.wait()
        attempt.cancel()
        with pytest.raises(asyncio.CancelledError):
            await attempt
        async with connect(one) as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None and not raw.is_in_transaction()
        assert await _rows(one, probe) == []
    finally:
        await one.dispose()
