"""The deliveries aggregate: the notification outbox, and the notifier's place in history.

Rows are made from the history in the transaction that also moves the notifier's cursor
past their events (so each event is notified once), claimed with FOR UPDATE SKIP LOCKED
under a short lease (so any number of notifiers share the work, one attempt at a time,
and no transaction stays open across an HTTP call), and settled by a statement fenced on
the attempt that claimed them.
"""

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Interval, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.engine import translate_unavailable
from shared.db.events import StreamPosition
from shared.db.tables import ERROR_MAX_CHARS, deliveries, notifier_cursor
from shared.domain.errors import DeliveryNotFound
from shared.domain.notifications import DeliveryStatus
from shared.domain.records import DeliveryRecord

_PENDING = DeliveryStatus.PENDING.value
_LEASE = func.now() + bindparam("lease", type_=Interval())
_DUE = (
    select(deliveries.c.id)
    .where(
        deliveries.c.status == _PENDING,
        deliveries.c.next_attempt_at <= func.now(),
        (deliveries.c.leased_until.is_(None)) | (deliveries.c.leased_until < func.now()),
    )
    .order_by(deliveries.c.next_attempt_at)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)
_CLAIM = (
    update(deliveries)
    .where(deliveries.c.id.in_(_DUE))
    .values(
        leased_until=_LEASE,
        attempts=deliveries.c.attempts + 1,
        first_attempt_at=func.coalesce(deliveries.c.first_attempt_at, func.now()),
        last_attempt_at=func.now(),
    )
    .returning(*deliveries.c)
)
# Only the attempt that claimed a delivery may settle it.
_FENCED = (
    deliveries.c.id == bindparam("delivery_id"),
    deliveries.c.attempts == bindparam("attempt"),
    deliveries.c.status == _PENDING,
)


class DeliveryRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def lock_cursor(self, start: StreamPosition) -> StreamPosition | None:
        """The notifier's position, locked for this transaction; None while another
        notifier holds it. Migration 0007 placed it; should the row be gone, `start`."""
        first = pg_insert(notifier_cursor).values(id=1, xact_id=start[0], event_id=start[1])
        locked = (
            select(notifier_cursor.c.xact_id, notifier_cursor.c.event_id)
            .where(notifier_cursor.c.id == 1)
            .with_for_update(skip_locked=True)
        )
        with translate_unavailable():
            await self._conn.execute(first.on_conflict_do_nothing())
            row = (await self._conn.execute(locked)).first()
        return None if row is None else (int(row[0]), int(row[1]))

    async def advance(self, position: StreamPosition) -> None:
        statement = (
            update(notifier_cursor)
            .where(notifier_cursor.c.id == 1)
            .values(xact_id=position[0], event_id=position[1])
        )
        with translate_unavailable():
            await self._conn.execute(statement)

    async def add(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            with translate_unavailable():
                await self._conn.execute(
                    insert(deliveries), [{**r, "status": _PENDING} for r in rows]
                )

    async def claim_due(self, *, limit: int, lease_s: float) -> list[DeliveryRecord]:
        """Due deliveries for this notifier to attempt now, each counted as an attempt."""
        values = {"limit": limit, "lease": timedelta(seconds=lease_s)}
        with translate_unavailable():
            rows = (await self._conn.execute(_CLAIM, values)).mappings().all()
        return [DeliveryRecord(**row) for row in rows]

    async def settle(
        self,
        delivery: DeliveryRecord,
        *,
        status: DeliveryStatus,
        retry_in: timedelta | None = None,
        code: int | None = None,
        error: str | None = None,
    ) -> bool:
        """Record an attempt's outcome: delivered, failed, or (PENDING) again in `retry_in`.
        False if another attempt has claimed the delivery since (this one's lease ran out)."""
        values: dict[str, Any] = {
            "status": status.value,
            "leased_until": None,
            "last_response_code": code,
            "last_error": error[:ERROR_MAX_CHARS] if error else None,
        }
        if status is DeliveryStatus.DELIVERED:
            values["delivered_at"] = func.now()
        if retry_in is not None:
            values["next_attempt_at"] = func.now() + retry_in
        statement = update(deliveries).where(*_FENCED).values(**values).returning(deliveries.c.id)
        params = {"delivery_id": delivery.id, "attempt": delivery.attempts}
        with translate_unavailable():
            return (await self._conn.execute(statement, params)).first() is not None

    async def of_webhook(self, webhook_id: uuid.UUID, *, limit: int) -> list[DeliveryRecord]:
        statement = (
            select(deliveries)
            .where(deliveries.c.webhook_id == webhook_id)
            .order_by(deliveries.c.created_at.desc(), deliveries.c.id)
            .limit(limit)
        )
        with translate_unavailable():
            rows = (await self._conn.execute(statement)).mappings().all()
        return [DeliveryRecord(**row) for row in rows]

    async def redeliver(self, webhook_id: uuid.UUID, delivery_id: uuid.UUID) -> DeliveryRecord:
        """Attempt a delivery again now, whatever became of it: same id, same body."""
        statement = (
            update(deliveries)
            .where(deliveries.c.id == delivery_id, deliveries.c.webhook_id == webhook_id)
            .values(status=_PENDING, next_attempt_at=func.now(), leased_until=None)
            .returning(*deliveries.c)
        )
        with translate_unavailable():
            row = (await self._conn.execute(statement)).mappings().one_or_none()
        if row is None:
            raise DeliveryNotFound(f"delivery {delivery_id} not found")
        return DeliveryRecord(**row)
