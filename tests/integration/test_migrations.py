"""Alembic: upgrade head builds exactly the schema in shared/tables.py, and downgrade undoes it."""

import uuid
from collections.abc import Iterator

import pytest

from tests.support.databases import alembic, create_database, drop_database
from tests.support.services import Services


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
