"""Opening an account: a user and its first API key, together or not at all."""

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.keys import KeyRepository
from shared.db.users import UserRepository
from shared.domain.enums import Role
from shared.domain.records import ApiKeyRecord, UserRecord

FIRST_KEY_NAME = "first key"


async def open_account(
    conn: AsyncConnection, *, name: str, email: str | None, role: Role
) -> tuple[UserRecord, str, ApiKeyRecord]:
    """(the user, its first key to show once, that key's record); call in a transaction."""
    user = await UserRepository(conn).create(name=name, email=email, role=role)
    key, record = await KeyRepository(conn).create(user_id=user.id, name=FIRST_KEY_NAME)
    return user, key, record
