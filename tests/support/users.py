"""Users and their API keys for tests, made through the repositories as the API makes them."""

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import transaction
from shared.domain.enums import Role
from shared.domain.records import UserRecord
from shared.services.accounts import open_account


async def make_user(
    engine: AsyncEngine, role: Role = Role.MEMBER, name: str | None = None
) -> tuple[UserRecord, str]:
    """A new user and its first key."""
    async with transaction(engine) as conn:
        user, key, _ = await open_account(
            conn, name=name or f"{role.value}-{uuid.uuid4().hex[:8]}", email=None, role=role
        )
    return user, key


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}
