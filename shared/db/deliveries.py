"""The deliveries aggregate: the notification outbox, and the notifier's place in history.

Rows are made from the history in the transaction that also moves the notifier's cursor
past their events (so each event is notified once), the first of them as attempts already
leased to the notifier that made them, the rest (and every retry) claimed with FOR UPDATE
SKIP LOCKED under a short lease (so any number of notifiers share the work, one attempt at
a time, and no transaction stays open across an HTTP call), and settled by a statement
fenced on the attempt.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    Float,
    Integer,
    Interval,
    String,
    Text,
    Uuid,
    any_,
    bindparam,
    case,
    cast,
    column,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeEngine

from shared.db import driver
from shared.db.engine import translate_unavailable
from shared.db.events import StreamPosition
from shared.db.tables import ERROR_MAX_CHARS, deliveries, notifier_cursor, webhooks
from shared.domain.errors import DeliveryInFlight, DeliveryNotFound
from shared.domain.notifications import DeliveryStatus
from shared.domain.records import DeliveryRecord

_PENDING = DeliveryStatus.PENDING.value
_CURSOR = (
    select(notifier_cursor.c.xact_id, notifier_cursor.c.event_id, func.now())
    .where(notifier_cursor.c.id == 1)
    .with_for_update(skip_locked=True)
)
_DELIVERED = DeliveryStatus.DELIVERED.value


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
# New deliveries as arrays, one element per row: one INSERT however many (an executemany
# runs the single-row INSERT once per row, in PostgreSQL as in the driver).
_ADDED_NAMES = (
    "id",
    "channel",
    "webhook_id",
    "user_id",
    "event_id",
    "task_id",
    "event_type",
    "payload",
    "status",
    "attempts",
    "next_attempt_at",
    "leased_until",
    "first_attempt_at",
    "last_attempt_at",
)
# Each column's own type, but the payload's: sent as JSON text, cast below.
_ADDED_COLUMNS: dict[str, TypeEngine[Any]] = {
    name: Text() if name == "payload" else deliveries.c[name].type for name in _ADDED_NAMES
}
_ADDED = (
    func.unnest(*(bindparam(name, type_=ARRAY(kind)) for name, kind in _ADDED_COLUMNS.items()))
    .table_valued(*(column(name, kind) for name, kind in _ADDED_COLUMNS.items()))
    .render_derived("added")
)
_ADD = insert(deliveries).from_select(
    list(_ADDED_COLUMNS),
    select(
        *(
            cast(_ADDED.c[name], JSONB) if name == "payload" else _ADDED.c[name]
            for name in _ADDED_COLUMNS
        )
    ),
)
# A batch's outcomes as arrays, one element per attempt: one statement whatever its size,
# built and prepared once (a VALUES list would be compiled anew for every batch).
_OUTCOME = (
    func.unnest(
        bindparam("ids", type_=ARRAY(Uuid())),
        bindparam("attempt_numbers", type_=ARRAY(Integer())),
        bindparam("statuses", type_=ARRAY(String())),
        bindparam("retry_s", type_=ARRAY(Float())),
        bindparam("codes", type_=ARRAY(Integer())),
        bindparam("errors", type_=ARRAY(String())),
    )
    .table_valued(
        column("id", Uuid),
        column("attempt", Integer),
        column("status", String),
        column("retry_s", Float),
        column("code", Integer),
        column("error", String),
    )
    .render_derived("outcome")
)
_SETTLING = (
    update(deliveries)
    .where(
        deliveries.c.id == _OUTCOME.c.id,
        deliveries.c.attempts == _OUTCOME.c.attempt,
        deliveries.c.status == _PENDING,
    )
    .values(
        status=_OUTCOME.c.status,
        leased_until=None,
        last_response_code=_OUTCOME.c.code,
        last_error=_OUTCOME.c.error,
        delivered_at=case((_OUTCOME.c.status == _DELIVERED, func.now()), else_=None),
        next_attempt_at=case(
            (
                _OUTCOME.c.retry_s.is_not(None),
                func.now() + _OUTCOME.c.retry_s * literal_column("interval '1 second'"),
            ),
            else_=deliveries.c.next_attempt_at,
        ),
    )
)
_SETTLE = _SETTLING.returning(deliveries.c.id)
# The same, and the count of failures in a row started afresh for every subscription that
# one of them was delivered to (left alone where it is 0: no row rewritten, none locked).
_SETTLED = _SETTLING.returning(deliveries.c.id, deliveries.c.webhook_id, deliveries.c.status).cte(
    "settled"
)
_RESTART_COUNTS = (
    update(webhooks)
    .where(
        webhooks.c.id.in_(select(_SETTLED.c.webhook_id).where(_SETTLED.c.status == _DELIVERED)),
        webhooks.c.consecutive_failures != 0,
    )
    .values(consecutive_failures=0)
    .cte("restarted")
)
_SETTLE_RESTARTING = select(_SETTLED.c.id).add_cte(_RESTART_COUNTS)
_RELEASE = (
    update(deliveries)
    .where(
        deliveries.c.id == any_(bindparam("ids", type_=ARRAY(Uuid()))),
        deliveries.c.status == _PENDING,
        deliveries.c.attempts == 1,
        deliveries.c.leased_until.is_not(None),
    )
    .values(
        attempts=0,
        leased_until=None,
        next_attempt_at=func.now(),
        first_attempt_at=None,
        last_attempt_at=None,
    )
)


class DeliveryRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def lock_cursor(self) -> tuple[StreamPosition, datetime] | None:
        """The notifier's position (migration 0007 placed it), locked for this transaction,
        and the transaction's `now()`; None while another notifier holds it."""
        with translate_unavailable():
            row = (await self._conn.execute(_CURSOR)).first()
        return None if row is None else ((int(row[0]), int(row[1])), row[2])

    async def advance(self, position: StreamPosition) -> None:
        statement = (
            update(notifier_cursor)
            .where(notifier_cursor.c.id == 1)
            .values(xact_id=position[0], event_id=position[1])
        )
        with translate_unavailable():
            await self._conn.execute(statement)

    async def add(self, rows: Sequence[dict[str, Any]]) -> None:
        """Store deliveries as `planning.plan` made them: each row with every column but
        those the table fills in, its payload as the text its first attempt sends."""
        if rows:
            values: dict[str, list[Any]] = {name: [] for name in _ADDED_COLUMNS}
            for row in rows:
                for name, column_values in values.items():
                    column_values.append(row["payload_json" if name == "payload" else name])
            await driver.fetch_all(self._conn, _ADD, values)

    async def release(self, ids: Sequence[uuid.UUID]) -> None:
        """Hand back deliveries lined up for a first attempt that was never made (the
        notifier is stopping, their lease ran short, a batch before them failed): due now,
        for any notifier, as if never claimed."""
        await driver.fetch_all(self._conn, _RELEASE, {"ids": list(ids)})

    async def claim_due(self, *, limit: int, lease_s: float) -> list[DeliveryRecord]:
        """Due deliveries for this notifier to attempt now, each counted as an attempt."""
        values = {"limit": limit, "lease": timedelta(seconds=lease_s)}
        return [DeliveryRecord(**row) for row in await driver.fetch_all(self._conn, _CLAIM, values)]

    async def settle(
        self, outcomes: Sequence[Outcome], *, restart_counts: bool = False
    ) -> set[uuid.UUID]:
        """Record attempts' outcomes, all in one statement: delivered, failed, or (PENDING)
        again after `retry_in`. Returns the deliveries settled: not one whose attempt was
        overtaken by another (its lease ran out meanwhile). `restart_counts`: in the same
        statement, each subscription a settled one was delivered to has had no failure in
        a row since (right when no outcome is a failure given up)."""
        if not outcomes:
            return set()
        values = {
            "ids": [o.delivery.id for o in outcomes],
            "attempt_numbers": [o.delivery.attempts for o in outcomes],
            "statuses": [o.status.value for o in outcomes],
            "retry_s": [
                None if o.retry_in is None else o.retry_in.total_seconds() for o in outcomes
            ],
            "codes": [o.code for o in outcomes],
            "errors": [o.error[:ERROR_MAX_CHARS] if o.error else None for o in outcomes],
        }
        statement = _SETTLE_RESTARTING if restart_counts else _SETTLE
        rows = await driver.fetch_all(self._conn, statement, values)
        return {row["id"] for row in rows}

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
        """Attempt a delivery again now, whatever became of it: same id, same body. Not
        while an attempt is under way (its lease runs): that one would still go out too."""
        mine = (deliveries.c.id == delivery_id, deliveries.c.webhook_id == webhook_id)
        statement = (
            update(deliveries)
            .where(
                *mine,
                or_(deliveries.c.leased_until.is_(None), deliveries.c.leased_until < func.now()),
            )
            .values(status=_PENDING, next_attempt_at=func.now(), leased_until=None)
            .returning(*deliveries.c)
        )
        with translate_unavailable():
            row = (await self._conn.execute(statement)).mappings().one_or_none()
            if (
                row is None
                and (await self._conn.execute(select(deliveries.c.id).where(*mine))).first()
            ):
                raise DeliveryInFlight(f"delivery {delivery_id} is being attempted")
        if row is None:
            raise DeliveryNotFound(f"delivery {delivery_id} not found")
        return DeliveryRecord(**row)
