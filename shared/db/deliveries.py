"""The deliveries aggregate: the notification outbox, and the notifier's place in history.

Rows are made from the history in the transaction that also moves the notifier's cursor
past their events (so each event is notified once), claimed with FOR UPDATE SKIP LOCKED
under a short lease (so any number of notifiers share the work, one attempt at a time,
and no transaction stays open across an HTTP call), and settled by a statement fenced on
the attempt that claimed them.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    Interval,
    String,
    Uuid,
    bindparam,
    case,
    cast,
    column,
    func,
    insert,
    literal_column,
    select,
    update,
    values,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.engine import translate_unavailable
from shared.db.events import StreamPosition
from shared.db.tables import ERROR_MAX_CHARS, deliveries, notifier_cursor
from shared.domain.errors import DeliveryNotFound
from shared.domain.notifications import DeliveryStatus
from shared.domain.records import DeliveryRecord

_PENDING = DeliveryStatus.PENDING.value
_CURSOR = (
    select(notifier_cursor.c.xact_id, notifier_cursor.c.event_id)
    .where(notifier_cursor.c.id == 1)
    .with_for_update(skip_locked=True)
)
_DELIVERED = DeliveryStatus.DELIVERED.value
_OUTCOME_COLUMNS = (
    column("id", Uuid),
    column("attempt", Integer),
    column("status", String),
    column("retry_s", Float),
    column("code", Integer),
    column("error", String),
)


@dataclass(frozen=True)
class Outcome:
    """What became of one attempt, to record."""

    delivery: DeliveryRecord
    status: DeliveryStatus
    retry_in: timedelta | None = None
    code: int | None = None
    error: str | None = None


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


class DeliveryRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def lock_cursor(self) -> StreamPosition | None:
        """The notifier's position (migration 0007 placed it), locked for this transaction;
        None while another notifier holds it."""
        with translate_unavailable():
            row = (await self._conn.execute(_CURSOR)).first()
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

    async def settle(self, outcomes: Sequence[Outcome]) -> set[uuid.UUID]:
        """Record attempts' outcomes, all in one statement: delivered, failed, or (PENDING)
        again after `retry_in`. Returns the deliveries settled: not one whose attempt was
        overtaken by another (its lease ran out meanwhile)."""
        if not outcomes:
            return set()
        rows = [
            (
                o.delivery.id,
                o.delivery.attempts,
                o.status.value,
                None if o.retry_in is None else o.retry_in.total_seconds(),
                o.code,
                o.error[:ERROR_MAX_CHARS] if o.error else None,
            )
            for o in outcomes
        ]
        given = values(*_OUTCOME_COLUMNS, name="outcome").data(rows)
        # Cast: the driver sends VALUES' parameters untyped, so PostgreSQL takes them as text.
        typed = {c.name: cast(given.c[c.name], c.type) for c in _OUTCOME_COLUMNS}
        statement = (
            update(deliveries)
            .where(
                deliveries.c.id == typed["id"],
                deliveries.c.attempts == typed["attempt"],
                deliveries.c.status == _PENDING,
            )
            .values(
                status=typed["status"],
                leased_until=None,
                last_response_code=typed["code"],
                last_error=typed["error"],
                delivered_at=case((typed["status"] == _DELIVERED, func.now()), else_=None),
                next_attempt_at=case(
                    (
                        typed["retry_s"].is_not(None),
                        func.now() + typed["retry_s"] * literal_column("interval '1 second'"),
                    ),
                    else_=deliveries.c.next_attempt_at,
                ),
            )
            .returning(deliveries.c.id)
        )
        with translate_unavailable():
            return set((await self._conn.execute(statement)).scalars().all())

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
