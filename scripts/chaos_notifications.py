"""The webhook half of `make chaos`: one admin subscription to every finished task, a
receiver in the chaos process that checks each signature as it arrives, and the tally of
what it got against the history.

A duplicate is a delivery (one `webhook-id`) received twice. That is expected only when
the first attempt's outcome was never written: its notifier died, or could not reach the
database to record it, or the receiver went down before answering. Each duplicate is put
down to the notifier fault that struck right after its first receipt, if any did.
"""

import asyncio
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.db.engine import create_engine
from shared.db.tables import deliveries, task_events
from shared.domain.notifications import DeliveryStatus
from shared.settings import Settings
from tests.support.receiver import Receiver
from tests.support.users import auth

HOOK_STATUSES = ["COMPLETED", "FAILED", "CANCELLED"]
# The faults that can make a receiver get a delivery twice (worker and broker faults cannot:
# a task is finished once, so its terminal event is notified once).
NOTIFIER_FAULTS = ("notifier", "db", "receiver")
# How long after a first receipt its outcome is written: milliseconds, unless the database
# is being cut. A fault that far around a duplicate's first receipt explains it.
CAUSE_WINDOW_S = 3.0


@dataclass(frozen=True)
class Fault:
    """A fault the chaos injected, from when it struck until it was repaired."""

    kind: str
    start: float  # time.monotonic()
    end: float


@dataclass(frozen=True)
class Outbox:
    """What the database says of the notifications of the accepted tasks."""

    expected: set[int]  # ids of their terminal events
    event_of: dict[str, int]  # webhook-id -> event id, of every delivery made
    undelivered: int  # expected events without a delivered delivery
    pending: int  # deliveries still to be attempted (or being attempted)


class Inbox:
    """The subscription's receiver, and the signature check of everything it got. Checked
    as it arrives: standardwebhooks refuses timestamps over 5 minutes old, and a soak
    lasts longer than that."""

    def __init__(self) -> None:
        self.receiver = Receiver()
        self.hook_id = ""
        self.secret = ""
        self.bad_signatures = 0
        self._checked = 0

    async def subscribe(self, base_url: str, key: str) -> None:
        """Subscribe the receiver, as the admin, to every finished task."""
        await self.receiver.start()
        body = {"url": self.receiver.url, "events": HOOK_STATUSES}
        async with httpx.AsyncClient(base_url=base_url, headers=auth(key)) as client:
            response = await client.post("/api/v1/webhooks", json=body)
        response.raise_for_status()
        self.hook_id, self.secret = response.json()["id"], response.json()["secret"]

    async def check_signatures(self) -> None:
        """Verify new arrivals every second, until cancelled."""
        while True:
            self.check_new()
            await asyncio.sleep(1)

    def check_new(self) -> None:
        webhook = Webhook(self.secret)
        new = self.receiver.received[self._checked :]
        self._checked += len(new)
        for got in new:
            try:
                webhook.verify(got.body, got.headers)
            except WebhookVerificationError:
                self.bad_signatures += 1

    async def wait_notified(
        self, settings: Settings, accepted: list[uuid.UUID], deadline_s: float
    ) -> Outbox:
        """Poll until every finished task's notification is delivered and none is still
        pending (a pending one may yet arrive a second time), or the deadline passes."""
        engine = create_engine(settings, pool_size=1)
        deadline = time.monotonic() + deadline_s
        try:
            while True:
                outbox = await self._outbox(engine, accepted)
                if not (outbox.undelivered or outbox.pending) or time.monotonic() > deadline:
                    return outbox
                await asyncio.sleep(1)
        finally:
            await engine.dispose()

    async def _outbox(self, engine: AsyncEngine, accepted: list[uuid.UUID]) -> Outbox:
        terminal = select(task_events.c.id).where(
            task_events.c.task_id.in_(accepted), task_events.c.to_status.in_(HOOK_STATUSES)
        )
        made = select(deliveries.c.id, deliveries.c.event_id, deliveries.c.status).where(
            deliveries.c.webhook_id == uuid.UUID(self.hook_id)
        )
        async with engine.connect() as conn:
            expected = set((await conn.execute(terminal)).scalars())
            rows = (await conn.execute(made)).all()
        delivered = {row.event_id for row in rows if row.status == DeliveryStatus.DELIVERED}
        return Outbox(
            expected=expected,
            event_of={f"msg_{row.id.hex}": row.event_id for row in rows},
            undelivered=len(expected - delivered),
            pending=sum(row.status == DeliveryStatus.PENDING for row in rows),
        )

    def tally(self, outbox: Outbox, faults: list[Fault]) -> Counter[str]:
        """Expected against received; duplicates counted, each with its likely cause."""
        self.check_new()
        arrivals: defaultdict[str, list[float]] = defaultdict(list)
        for got in self.receiver.received:
            arrivals[got.headers.get("webhook-id", "")].append(got.at)
        mine = [msg for msg in arrivals if outbox.event_of.get(msg) in outbox.expected]
        notified = {outbox.event_of[msg] for msg in mine}
        counts = Counter(
            {
                "expected": len(outbox.expected),
                "received": len(arrivals),
                "missing": len(outbox.expected - notified),
                # An event under two webhook-ids: no receiver could tell it came twice.
                "notified twice": len(mine) - len(notified),
                # Of tasks not accepted: created, but the answer to their create was lost.
                "of other tasks": len(arrivals) - len(mine),
                "bad signatures": self.bad_signatures,
            }
        )
        for times in arrivals.values():
            if len(times) > 1:
                counts["duplicates"] += 1
                counts[f"duplicate after {cause(min(times), faults)}"] += 1
        return counts


def cause(first_at: float, faults: list[Fault]) -> str:
    """The notifier fault nearest a duplicate's first receipt, or 'nothing'."""
    near = [
        fault
        for fault in faults
        if fault.kind in NOTIFIER_FAULTS
        and fault.start <= first_at + CAUSE_WINDOW_S
        and fault.end >= first_at - CAUSE_WINDOW_S
    ]
    if not near:
        return "nothing"
    return min(near, key=lambda fault: abs(fault.start - first_at)).kind
