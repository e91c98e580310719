"""The sessions aggregate: an API key exchanged for a dashboard session, and back to a
principal. A session is valid while not ended or expired, and while its key and its user
are (so revoking the key or disabling the user ends it)."""

from datetime import timedelta

from sqlalchemy import Interval, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.engine import translate_unavailable
from shared.db.tables import api_keys, sessions, users
from shared.domain import sessions as tokens
from shared.domain.enums import Role
from shared.domain.records import Principal

_CREATE = insert(sessions).values(
    digest=bindparam("new_digest"),
    key_id=bindparam("key_id"),
    expires_at=func.now() + bindparam("lifetime", type_=Interval()),
)
_PRINCIPAL = (
    select(api_keys.c.id, users.c.id.label("user_id"), users.c.name, users.c.role)
    .select_from(sessions)
    .join(api_keys, api_keys.c.id == sessions.c.key_id)
    .join(users, users.c.id == api_keys.c.user_id)
    .where(
        sessions.c.digest == bindparam("wanted_digest"),
        sessions.c.ended_at.is_(None),
        sessions.c.expires_at > func.now(),
        api_keys.c.revoked_at.is_(None),
        or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > func.now()),
        users.c.disabled_at.is_(None),
    )
)
_END = (
    update(sessions)
    .where(sessions.c.digest == bindparam("wanted_digest"), sessions.c.ended_at.is_(None))
    .values(ended_at=func.now())
)


# Ended and expired sessions are kept this long (for a look at who was signed in), then go.
KEPT_AFTER_END = timedelta(days=7)
_PURGE = delete(sessions).where(
    func.coalesce(sessions.c.ended_at, sessions.c.expires_at) < func.now() - KEPT_AFTER_END
)


class SessionRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def start(self, principal: Principal, *, lifetime: timedelta) -> str:
        """A new session for the key behind `principal`: the token, for the cookie only."""
        token = tokens.new_token()
        values = {
            "new_digest": tokens.digest(token),
            "key_id": principal.key_id,
            "lifetime": lifetime,
        }
        with translate_unavailable():
            await self._conn.execute(_CREATE, values)
        return token

    async def principal(self, token: str) -> Principal | None:
        with translate_unavailable():
            result = await self._conn.execute(_PRINCIPAL, {"wanted_digest": tokens.digest(token)})
            row = result.mappings().first()
        if row is None:
            return None
        return Principal(
            user_id=row["user_id"], name=row["name"], role=Role(row["role"]), key_id=row["id"]
        )

    async def purge(self) -> None:
        with translate_unavailable():
            await self._conn.execute(_PURGE)

    async def end(self, token: str) -> None:
        with translate_unavailable():
            await self._conn.execute(_END, {"wanted_digest": tokens.digest(token)})
