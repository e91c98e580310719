"""The users aggregate: who may use the service, and in which role."""

import uuid
from collections.abc import Collection
from typing import Any

from sqlalchemy import ARRAY, Uuid, any_, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import driver
from shared.db.engine import translate_unavailable
from shared.db.tables import users
from shared.domain.enums import Role, TaskStatus
from shared.domain.errors import EmailMissing, LastAdmin, NameTaken, UserNotFound
from shared.domain.records import UserRecord

_BY_ID = select(users).where(users.c.id == bindparam("user_id"))
_BY_NAME = select(users).where(users.c.name == bindparam("name"))
# The notifier reads each batch's recipients: one statement whatever their number.
_BY_IDS = select(users).where(users.c.id == any_(bindparam("ids", type_=ARRAY(Uuid()))))
# Every active admin, locked: two admins demoting each other at once must not both win.
_ACTIVE_ADMINS = (
    select(users.c.id)
    .where(users.c.role == Role.ADMIN.value, users.c.disabled_at.is_(None))
    .with_for_update()
)


class UserRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def create(self, *, name: str, email: str | None, role: Role) -> UserRecord:
        statement = (
            insert(users).values(name=name, email=email, role=role.value).returning(*users.c)
        )
        try:
            with translate_unavailable():
                row = (await self._conn.execute(statement)).mappings().one()
        except IntegrityError as exc:
            raise NameTaken(f"a user named {name!r} exists already") from exc
        return UserRecord.from_row(row)

    async def get(self, user_id: uuid.UUID) -> UserRecord:
        return await self._one(_BY_ID, {"user_id": user_id}, f"user {user_id} not found")

    async def by_name(self, name: str) -> UserRecord:
        return await self._one(_BY_NAME, {"name": name}, f"no user is named {name!r}")

    async def listing(self) -> list[UserRecord]:
        statement = select(users).order_by(users.c.created_at, users.c.name)
        with translate_unavailable():
            rows = (await self._conn.execute(statement)).mappings().all()
        return [UserRecord.from_row(row) for row in rows]

    async def update(self, user_id: uuid.UUID, **changes: Any) -> UserRecord:
        """Change email, role and/or disabled; call inside a transaction.

        Refuses (LastAdmin) to demote or disable the last active admin.
        """
        current = await self.get(user_id)
        values: dict[str, Any] = {}
        if "email" in changes:
            values["email"] = changes["email"]
        if changes.get("role") is not None:
            values["role"] = Role(changes["role"]).value
        if changes.get("disabled") is not None:
            keep = current.disabled_at if current.disabled_at else func.now()
            values["disabled_at"] = keep if changes["disabled"] else None
        if not values:
            return current
        if await self._would_leave_no_admin(current, values):
            raise LastAdmin()
        statement = update(users).where(users.c.id == user_id).values(**values)
        with translate_unavailable():
            row = (await self._conn.execute(statement.returning(*users.c))).mappings().one()
        return UserRecord.from_row(row)

    async def _would_leave_no_admin(self, current: UserRecord, values: dict[str, Any]) -> bool:
        if current.role is not Role.ADMIN or current.disabled_at is not None:
            return False  # not an active admin now: the count of them cannot drop
        still_admin = values.get("role", current.role.value) == Role.ADMIN.value
        still_active = values.get("disabled_at", current.disabled_at) is None
        if still_admin and still_active:
            return False
        with translate_unavailable():
            admins = set((await self._conn.execute(_ACTIVE_ADMINS)).scalars().all())
        return admins <= {current.id}

    async def _one(self, statement: Any, values: dict[str, Any], missing: str) -> UserRecord:
        with translate_unavailable():
            row = (await self._conn.execute(statement, values)).mappings().one_or_none()
        if row is None:
            raise UserNotFound(missing)
        return UserRecord.from_row(row)

    async def set_notify_email(
        self, user_id: uuid.UUID, statuses: Collection[TaskStatus]
    ) -> UserRecord:
        """Which of their tasks' statuses the user is e-mailed about; they need an email
        address for any (EmailMissing)."""
        wanted = sorted(status.value for status in statuses)
        statement = (
            update(users)
            .where(users.c.id == user_id, users.c.email.is_not(None) | (len(wanted) == 0))
            .values(notify_email=wanted)
            .returning(*users.c)
        )
        with translate_unavailable():
            row = (await self._conn.execute(statement)).mappings().one_or_none()
        if row is None:
            await self.get(user_id)  # UserNotFound if that is why
            raise EmailMissing()
        return UserRecord.from_row(row)

    async def by_ids(self, user_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, UserRecord]:
        if not user_ids:
            return {}
        rows = await driver.fetch_all(self._conn, _BY_IDS, {"ids": list(user_ids)})
        return {row["id"]: UserRecord.from_row(row) for row in rows}

    async def email_recipients(self) -> list[UserRecord]:
        """Active users with an address who want e-mail about some status."""
        statement = select(users).where(
            users.c.notify_email != [],
            users.c.email.is_not(None),
            users.c.disabled_at.is_(None),
        )
        with translate_unavailable():
            rows = (await self._conn.execute(statement)).mappings().all()
        return [UserRecord.from_row(row) for row in rows]
