"""The webhooks aggregate: subscriptions, scoped to their owner like tasks are."""

import secrets
import uuid
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Uuid,
    any_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import driver
from shared.db.engine import translate_unavailable
from shared.db.tables import users, webhooks
from shared.domain.enums import Role, TaskStatus
from shared.domain.errors import WebhookNotFound
from shared.domain.records import WebhookRecord

SALT_BYTES = 16
# The notifier reads each batch's subscriptions: one statement whatever their number.
_BY_IDS = select(webhooks).where(webhooks.c.id == any_(bindparam("ids", type_=ARRAY(Uuid()))))


class WebhookRepository:
    def __init__(self, conn: AsyncConnection, *, owner: uuid.UUID | None = None) -> None:
        """`owner`: only that user's subscriptions (a member's scope); None: everybody's."""
        self._conn = conn
        self._owner = owner

    async def create(
        self, *, owner_id: uuid.UUID, url: str, events: Sequence[TaskStatus], description: str
    ) -> WebhookRecord:
        statement = (
            insert(webhooks)
            .values(
                owner_id=owner_id,
                url=url,
                events=[status.value for status in events],
                description=description,
                secret_salt=secrets.token_bytes(SALT_BYTES),
            )
            .returning(*webhooks.c)
        )
        return await self._one(statement)

    async def get(self, webhook_id: uuid.UUID) -> WebhookRecord:
        return await self._one(select(webhooks).where(*self._mine(webhook_id)))

    async def listing(self) -> list[WebhookRecord]:
        statement = select(webhooks).order_by(webhooks.c.created_at.desc())
        if self._owner is not None:
            statement = statement.where(webhooks.c.owner_id == self._owner)
        with translate_unavailable():
            rows = (await self._conn.execute(statement)).mappings().all()
        return [WebhookRecord.from_row(row) for row in rows]

    async def update(self, webhook_id: uuid.UUID, **changes: Any) -> WebhookRecord:
        """Change url, events, description and/or enabled; enabling again starts the count
        of failures afresh."""
        values: dict[str, Any] = {"updated_at": func.now()}
        for name in ("url", "description"):
            if changes.get(name) is not None:
                values[name] = changes[name]
        if changes.get("events") is not None:
            values["events"] = [status.value for status in changes["events"]]
        if changes.get("enabled") is not None:
            values["enabled"] = changes["enabled"]
            if changes["enabled"]:
                values.update(disabled_reason=None, consecutive_failures=0)
            else:
                values["disabled_reason"] = "disabled by its owner"
        statement = update(webhooks).where(*self._mine(webhook_id)).values(**values)
        return await self._one(statement.returning(*webhooks.c))

    async def delete(self, webhook_id: uuid.UUID) -> None:
        statement = delete(webhooks).where(*self._mine(webhook_id)).returning(webhooks.c.id)
        with translate_unavailable():
            found = (await self._conn.execute(statement)).first()
        if found is None:
            raise WebhookNotFound(f"webhook {webhook_id} not found")

    async def enabled_with_scope(self) -> list[tuple[WebhookRecord, uuid.UUID | None]]:
        """Every enabled subscription with whose tasks it sees (None: an admin's, all)."""
        statement = (
            select(webhooks, users.c.role)
            .join(users, users.c.id == webhooks.c.owner_id)
            .where(webhooks.c.enabled, users.c.disabled_at.is_(None))
        )
        with translate_unavailable():
            rows = (await self._conn.execute(statement)).mappings().all()
        found = []
        for row in rows:
            record = WebhookRecord.from_row({k: v for k, v in row.items() if k != "role"})
            found.append((record, None if row["role"] == Role.ADMIN.value else record.owner_id))
        return found

    async def by_ids(self, webhook_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, WebhookRecord]:
        if not webhook_ids:
            return {}
        rows = await driver.fetch_all(self._conn, _BY_IDS, {"ids": list(webhook_ids)})
        return {row["id"]: WebhookRecord.from_row(row) for row in rows}

    async def note_outcomes(
        self, webhook_id: uuid.UUID, *, reset: bool, failures: int, limit: int
    ) -> None:
        """Count deliveries that ended, oldest first folded into: `reset` (one was
        delivered) starts the count of failures in a row afresh, then `failures` more; the
        `limit`-th in a row disables the subscription, saying why."""
        base = literal(0) if reset else webhooks.c.consecutive_failures
        counted = base + failures
        values: dict[str, Any] = (
            {"consecutive_failures": counted}
            if failures == 0
            else {
                "consecutive_failures": counted,
                "enabled": webhooks.c.enabled & (counted < limit),
                "disabled_reason": func.coalesce(
                    webhooks.c.disabled_reason,
                    case(
                        (counted >= limit, f"{limit} deliveries in a row failed"),
                        else_=None,
                    ),
                ),
            }
        )
        statement = update(webhooks).where(webhooks.c.id == webhook_id).values(**values)
        if reset and failures == 0:
            # Deliveries went out and none failed since: usually the count is 0 already,
            # and a row left alone is neither rewritten nor locked against other notifiers.
            statement = statement.where(webhooks.c.consecutive_failures != 0)
        with translate_unavailable():
            await self._conn.execute(statement)

    def _mine(self, webhook_id: uuid.UUID) -> list[ColumnElement[bool]]:
        owner = bindparam("owner", self._owner, type_=webhooks.c.owner_id.type)
        return [webhooks.c.id == webhook_id, or_(owner.is_(None), webhooks.c.owner_id == owner)]

    async def _one(self, statement: Any) -> WebhookRecord:
        with translate_unavailable():
            row = (await self._conn.execute(statement)).mappings().one_or_none()
        if row is None:
            raise WebhookNotFound()
        return WebhookRecord.from_row(row)
