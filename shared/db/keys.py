"""The API keys aggregate: keys are made, listed, revoked, and turned into a principal.

Only a key's SHA-256 digest is stored. A key is looked up by its digest (a unique index):
the comparisons the index makes are not constant-time, but they compare SHA-256 digests,
which a caller cannot steer byte by byte, so how long a lookup takes says nothing about any
part of a key, its prefix included.
"""

import uuid
from datetime import datetime, timedelta

from sqlalchemy import Interval, bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.engine import translate_unavailable
from shared.db.tables import api_keys, users
from shared.domain import keys
from shared.domain.enums import Role
from shared.domain.errors import KeyNotFound
from shared.domain.records import ApiKeyRecord, Principal

# last_used_at is refreshed at most this often per key: not one write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)

_LISTED = [c for c in api_keys.c if c.name != "digest"]
_VALID = (
    select(api_keys.c.id, users.c.id.label("user_id"), users.c.name, users.c.role)
    .join(users, users.c.id == api_keys.c.user_id)
    .where(
        api_keys.c.digest == bindparam("wanted_digest"),
        api_keys.c.revoked_at.is_(None),
        or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > func.now()),
        users.c.disabled_at.is_(None),
    )
    .cte("valid")
)
_TOUCH = (
    update(api_keys)
    .where(
        api_keys.c.id == _VALID.c.id,
        or_(
            api_keys.c.last_used_at.is_(None),
            api_keys.c.last_used_at
            < func.now() - bindparam("resolution", LAST_USED_RESOLUTION, type_=Interval()),
        ),
    )
    .values(last_used_at=func.now())
    .cte("touched")
)
# One round trip: find the valid key and its user, and note its use now and then.
_PRINCIPAL = select(_VALID).add_cte(_TOUCH)


class KeyRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def create(
        self, *, user_id: uuid.UUID, name: str, expires_at: datetime | None = None
    ) -> tuple[str, ApiKeyRecord]:
        """A new key for the user: (the key itself, to show once; its record)."""
        key = keys.new_key()
        statement = (
            insert(api_keys)
            .values(
                user_id=user_id,
                name=name,
                prefix=keys.shown_prefix(key),
                digest=keys.digest(key),
                expires_at=expires_at,
            )
            .returning(*_LISTED)
        )
        with translate_unavailable():
            row = (await self._conn.execute(statement)).mappings().one()
        return key, ApiKeyRecord(**row)

    async def of_user(self, user_id: uuid.UUID) -> list[ApiKeyRecord]:
        statement = (
            select(*_LISTED)
            .where(api_keys.c.user_id == user_id)
            .order_by(api_keys.c.created_at.desc())
        )
        with translate_unavailable():
            rows = (await self._conn.execute(statement)).mappings().all()
        return [ApiKeyRecord(**row) for row in rows]

    async def revoke(self, key_id: uuid.UUID, *, owner: uuid.UUID | None) -> ApiKeyRecord:
        """Revoke a key of `owner` (None: anybody's, for admins); idempotent."""
        conditions = [api_keys.c.id == key_id]
        if owner is not None:
            conditions.append(api_keys.c.user_id == owner)
        statement = (
            update(api_keys)
            .where(*conditions)
            .values(revoked_at=func.coalesce(api_keys.c.revoked_at, func.now()))
            .returning(*_LISTED)
        )
        with translate_unavailable():
            row = (await self._conn.execute(statement)).mappings().one_or_none()
        if row is None:
            raise KeyNotFound(f"API key {key_id} not found")
        return ApiKeyRecord(**row)

    async def revoke_by_prefix(self, prefix: str) -> list[ApiKeyRecord]:
        statement = (
            update(api_keys)
            .where(api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=func.now())
            .returning(*_LISTED)
        )
        with translate_unavailable():
            rows = (await self._conn.execute(statement)).mappings().all()
        return [ApiKeyRecord(**row) for row in rows]

    async def principal(self, key: str) -> Principal | None:
        """Who a key belongs to, if it is valid now: not revoked, not expired, user enabled."""
        wanted = keys.digest(key)
        with translate_unavailable():
            row = (
                (await self._conn.execute(_PRINCIPAL, {"wanted_digest": wanted})).mappings().first()
            )
        if row is None:
            return None
        return Principal(
            user_id=row["user_id"], name=row["name"], role=Role(row["role"]), key_id=row["id"]
        )
