"""Alembic: upgrade head builds exactly the schema in shared/tables.py, and downgrade undoes it."""

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from shared.db.tables import LEGACY_USER_ID, metadata
from tests.support.databases import alembic, create_database, drop_database, plain_dsn
from tests.support.services import Services

LEGACY = uuid.UUID(LEGACY_USER_ID)


@pytest.fixture
def empty_database(services: Services) -> Iterator[str]:
    name = f"taskq_migrate_{uuid.uuid4().hex[:12]}"
    url = create_database(services.admin_database_url, name)
    yield url
    drop_database(services.admin_database_url, name)


def test_upgrade_head_matches_the_models_exactly(empty_database: str) -> None:
    alembic(empty_database, "upgrade", "head")

    # `alembic check` compares the migrated database with shared.tables.metadata.
    result = alembic(empty_database, "check")
    assert "No new upgrade operations detected" in result.stdout + result.stderr


def test_downgrade_to_base_and_upgrade_again_round_trips(empty_database: str) -> None:
    alembic(empty_database, "upgrade", "head")
    alembic(empty_database, "downgrade", "base")
    after_downgrade = alembic(empty_database, "current").stdout.strip()
    alembic(empty_database, "upgrade", "head")
    after_upgrade = alembic(empty_database, "current").stdout.strip()

    assert after_downgrade == ""
    # Upgrading again would fail on a leftover table or index: downgrade removed them all.
    assert "(head)" in after_upgrade


async def test_existing_tasks_get_the_legacy_owner_and_survive_down_and_up_again(
    empty_database: str,
) -> None:
    await asyncio.to_thread(alembic, empty_database, "upgrade", "0003")
    conn = await asyncpg.connect(plain_dsn(empty_database))
    try:
        await conn.execute(
            "INSERT INTO tasks (title, priority, status, kind) "
            "SELECT 'old', p, s, 'simulate' FROM unnest(ARRAY['LOW','HIGH','HIGH']) AS p, "
            "unnest(ARRAY['COMPLETED','PENDING']) AS s"
        )
        await conn.execute(
            "INSERT INTO task_counts (status, priority, shard, n) "
            "SELECT status, priority, 0, count(*) FROM tasks GROUP BY status, priority"
        )

        await asyncio.to_thread(alembic, empty_database, "upgrade", "head")
        owners = await conn.fetch("SELECT owner_id, count(*) AS n FROM tasks GROUP BY owner_id")
        legacy = await conn.fetchrow("SELECT name, disabled_at FROM users WHERE id = $1", LEGACY)
        counted = await conn.fetchval("SELECT sum(n) FROM task_counts WHERE owner_id = $1", LEGACY)

        await asyncio.to_thread(alembic, empty_database, "downgrade", "0003")
        after_down = await conn.fetchval("SELECT count(*) FROM tasks")
        counts_down = await conn.fetchval("SELECT sum(n) FROM task_counts")
        await asyncio.to_thread(alembic, empty_database, "upgrade", "head")
        after_up = await conn.fetchval("SELECT count(*) FROM tasks WHERE owner_id = $1", LEGACY)
    finally:
        await conn.close()

    assert [(row["owner_id"], row["n"]) for row in owners] == [(LEGACY, 6)]
    assert legacy["name"] == "legacy" and legacy["disabled_at"] is not None
    assert counted == counts_down == 6
    assert after_down == after_up == 6


async def test_every_table_is_migrated_with_the_storage_options_its_model_declares(
    empty_database: str,
) -> None:
    # `alembic check` compares columns and indexes, not table options such as fillfactor.
    await asyncio.to_thread(alembic, empty_database, "upgrade", "head")
    conn = await asyncpg.connect(plain_dsn(empty_database))
    try:
        rows = await conn.fetch(
            "SELECT relname, reloptions FROM pg_class "
            "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        )
    finally:
        await conn.close()

    migrated = {row["relname"]: sorted(row["reloptions"] or []) for row in rows}
    declared = {
        name: sorted(
            f"{k}={v}" for k, v in (table.dialect_options["postgresql"]["with"] or {}).items()
        )
        for name, table in metadata.tables.items()
    }
    assert {name: migrated.get(name) for name in declared} == declared
    assert declared["deliveries"] == ["fillfactor=50"]
