"""The notifier process: two supervised loops until SIGTERM/SIGINT.

- fan-out: reads settled history past its cursor and makes the deliveries it calls for,
  in one transaction with moving the cursor (one notifier at a time does this), then
  makes the first attempt of those it lined up for itself as it stored them;
- deliver: claims due deliveries (any number of notifiers at once) and attempts them:
  retries, the rest of a large fan-out, and those of a notifier that died.
"""

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from notifier import mail, webhooks
from notifier.accounting import ended_per_webhook
from notifier.planning import line_up, plan, wanted_statuses
from notifier.webhooks import Attempt
from shared.background.periodic import Loop, Supervisor
from shared.db import driver
from shared.db.deliveries import DeliveryRepository, Outcome
from shared.db.engine import connect, create_engine
from shared.db.events import EventRepository
from shared.db.tasks import TaskRepository
from shared.db.users import UserRepository
from shared.db.webhooks import WebhookRepository
from shared.domain.errors import DatabaseUnavailable
from shared.domain.notifications import Channel, DeliveryStatus, retry_delay
from shared.domain.records import DeliveryRecord, UserRecord, WebhookRecord
from shared.settings import Settings

log = logging.getLogger(__name__)

BATCH = 500  # history rows per fan-out
CLAIM = 20  # deliveries attempted at once by one notifier
# Batches of its own deliveries a fan-out attempts at once instead of leaving them to be
# claimed: no claim statement, no row version for it. More would lengthen the leases of
# the last (a batch's bound each), the wait should that notifier die with them.
LINED_UP_BATCHES = 12
# The time a fan-out may take from its transaction's start to its first batch's (reads,
# insert, commit: milliseconds); later batches each start a bound after the one before.
LINED_UP_START_S = 1.0
# Recipients as a fan-out read them serve its batches for this long; later ones read them
# again (a subscription deleted or moved meanwhile must not get the task).
RECIPIENTS_FRESH_S = 1.0
# A lease lasts an attempt's WEBHOOK_TIMEOUT_SECONDS and this margin to record its outcome,
# retried this long through a database blip: unrecorded, it would be sent again.
RECORD_MARGIN_S = 5.0
ATTEMPTS = Counter("taskq_notifier_attempts_total", "Delivery attempts", ["channel", "outcome"])


@dataclass(frozen=True)
class Made:
    """What one fan-out made: the deliveries lined up for this notifier, whom they go to."""

    lined_up: list[DeliveryRecord]
    hooks: dict[uuid.UUID, WebhookRecord]
    people: dict[uuid.UUID, UserRecord]
    begun: float  # time.monotonic() before the transaction that made them
    more: bool  # a full batch of history was read: more may be waiting


class Notifier:
    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self._client = webhooks.session(settings, connections=CLAIM)
        self._draining = False
        self._attempting = asyncio.Lock()  # held while a batch is out

    def loops(self) -> list[Loop]:
        poll = self._settings.notifier_poll_seconds
        return [Loop("fan-out", poll, self.fan_out), Loop("deliver", poll, self.deliver)]

    async def drain(self) -> None:
        """Claim nothing more, and let the batch that is out finish and be recorded: cut
        short, a delivery the receiver took would be sent again once its lease ran out."""
        self._draining = True
        # A batch's bound, and a margin for handing back what a fan-out had lined up.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._bound_s + RECORD_MARGIN_S), self._attempting:
                pass

    async def close(self) -> None:
        await self._client.close()

    async def fan_out(self) -> bool:
        """Deliveries for the next settled events, and the first attempt of those this
        notifier lined up for itself; True if more may be waiting."""
        # Taken first, so that no batch is out as the leases of those lined up begin.
        async with self._attempting:
            if self._draining:
                return False
            made = await self._make_deliveries()
            if made is None:
                return False
            await self._attempt_lined_up(made)
        return made.more

    async def _make_deliveries(self) -> Made | None:
        """In one transaction with moving the cursor past their events: the deliveries,
        the first of them lined up for this notifier (`planning.line_up`)."""
        begun = time.monotonic()  # no later than the transaction's now(), the leases' start
        async with connect(self._engine) as conn, driver.transaction(conn):
            history = EventRepository(conn)
            outbox = DeliveryRepository(conn)
            locked = await outbox.lock_cursor()
            if locked is None:
                return None  # another notifier is at it
            position, now = locked
            events = await history.settled_after(position, limit=BATCH)
            if not events:
                return None
            subscriptions = await WebhookRepository(conn).enabled_with_scope()
            recipients = await UserRepository(conn).email_recipients()
            statuses = wanted_statuses(subscriptions, recipients)
            wanted = [event for event in events if event.to_status in statuses]
            tasks = await TaskRepository(conn).many({event.task_id for event in wanted})
            rows = plan(wanted, subscriptions, recipients, tasks)
            lined_up = line_up(
                rows,
                now=now,
                per_batch=CLAIM,
                batches=LINED_UP_BATCHES,
                bound_s=self._bound_s,
                start_s=LINED_UP_START_S,
            )
            await outbox.add(rows)
            await outbox.advance(events[-1].position)
        return Made(
            lined_up=lined_up,
            hooks={webhook.id: webhook for webhook, _ in subscriptions},
            people={user.id: user for user in recipients},
            begun=begun,
            more=len(events) == BATCH,
        )

    async def _attempt_lined_up(self, made: Made) -> None:
        """Batch after batch, each only while its lease still has a batch's time left;
        those not begun (the notifier is stopping, a lease ran short, a batch failed) are
        handed back at once rather than left to their leases."""
        batches = [made.lined_up[n : n + CLAIM] for n in range(0, len(made.lined_up), CLAIM)]
        for number, batch in enumerate(batches):
            # Its lease ends number + 1 bounds after the start: a whole bound must be left.
            start_by = LINED_UP_START_S + number * self._bound_s
            if self._draining or time.monotonic() - made.begun > start_by:
                await self._release(batches[number:])
                return
            try:
                await self._attempt_batch(batch, *await self._recipients(made, batch))
            except Exception:
                await self._release(batches[number + 1 :])
                raise

    async def _recipients(
        self, made: Made, batch: list[DeliveryRecord]
    ) -> tuple[dict[uuid.UUID, WebhookRecord], dict[uuid.UUID, UserRecord]]:
        """Whom the batch goes to: as the fan-out read them, unless that is too long ago
        for a change of URL or a deletion to be missed; then as they are now."""
        if time.monotonic() - made.begun <= RECIPIENTS_FRESH_S:
            return made.hooks, made.people
        async with connect(self._engine) as conn:
            return await self._recipients_of(conn, batch)

    async def _recipients_of(
        self, conn: AsyncConnection, due: list[DeliveryRecord]
    ) -> tuple[dict[uuid.UUID, WebhookRecord], dict[uuid.UUID, UserRecord]]:
        hooks = await WebhookRepository(conn).by_ids(
            {d.webhook_id for d in due if d.webhook_id is not None}
        )
        people = await UserRepository(conn).by_ids(
            {d.user_id for d in due if d.user_id is not None}
        )
        return hooks, people

    async def _release(self, batches: list[list[DeliveryRecord]]) -> None:
        ids = [delivery.id for batch in batches for delivery in batch]
        if ids:
            async with connect(self._engine) as conn:
                await DeliveryRepository(conn).release(ids)

    async def deliver(self) -> bool:
        """Attempt what is due in the outbox; True if a full batch was claimed (more may be
        due). A batch costs three statements however large: the claim, one read of its
        recipients, one write of its outcomes (and one per webhook whose count moved).
        """
        async with self._attempting:
            if self._draining:  # told to stop while it waited for the batch before
                return False
            return await self._deliver_batch()

    async def _deliver_batch(self) -> bool:
        async with connect(self._engine) as conn:
            due = await DeliveryRepository(conn).claim_due(limit=CLAIM, lease_s=self._bound_s)
            if not due:
                return False
            hooks, people = await self._recipients_of(conn, due)
        await self._attempt_batch(due, hooks, people)
        return len(due) == CLAIM

    @property
    def _bound_s(self) -> float:
        """How long one batch may take, its attempts and the record of their outcomes."""
        return self._settings.webhook_timeout_seconds + RECORD_MARGIN_S

    async def _attempt_batch(
        self,
        due: list[DeliveryRecord],
        hooks: dict[uuid.UUID, WebhookRecord],
        people: dict[uuid.UUID, UserRecord],
    ) -> None:
        attempts = [self._attempt(delivery, hooks, people) for delivery in due]
        outcomes = [
            self._outcome(d, a) for d, a in zip(due, await asyncio.gather(*attempts), strict=True)
        ]
        await self._record(outcomes)

    async def _attempt(
        self,
        delivery: DeliveryRecord,
        hooks: dict[uuid.UUID, WebhookRecord],
        people: dict[uuid.UUID, UserRecord],
    ) -> Attempt:
        if delivery.channel == Channel.EMAIL.value:
            user = people.get(delivery.user_id) if delivery.user_id else None
            if user is None:
                return Attempt(False, error="its recipient is gone")
            return await mail.attempt(delivery, user, self._settings)
        webhook = hooks.get(delivery.webhook_id) if delivery.webhook_id else None
        if webhook is None:
            return Attempt(False, error="its subscription is gone")
        if not webhook.enabled:
            return Attempt(False, error=f"subscription disabled: {webhook.disabled_reason}")
        return await webhooks.attempt(self._client, webhook, delivery, self._settings)

    def _outcome(self, delivery: DeliveryRecord, result: Attempt) -> Outcome:
        ATTEMPTS.labels(delivery.channel, "delivered" if result.delivered else "failed").inc()
        if result.delivered:
            return Outcome(delivery, DeliveryStatus.DELIVERED, code=result.code)
        settings = self._settings
        first, last = delivery.first_attempt_at, delivery.last_attempt_at
        assert first is not None and last is not None  # set by the claim
        retry_in = retry_delay(
            delivery.attempts,
            since_first_s=(last - first).total_seconds(),
            schedule_s=settings.notify_retry_seconds,
            repeat_s=settings.notify_retry_repeat_seconds,
            give_up_s=settings.notify_give_up_seconds,
        )
        status = DeliveryStatus.PENDING if retry_in is not None else DeliveryStatus.FAILED
        return Outcome(delivery, status, retry_in=retry_in, code=result.code, error=result.error)

    async def _record(self, outcomes: list[Outcome]) -> None:
        """The batch's outcomes, and what they do to their subscriptions' failure counts.

        Fenced on the attempts: a retry after a commit that did happen writes nothing.
        """
        async for retry in _recording():
            with retry:
                await self._write(outcomes)
        for outcome in outcomes:
            _log_outcome(outcome)

    async def _write(self, outcomes: list[Outcome]) -> None:
        if all(outcome.status is not DeliveryStatus.FAILED for outcome in outcomes):
            # The usual batch: no failure given up, so a delivery only starts a count afresh,
            # which the settling statement does itself; no transaction around it.
            async with connect(self._engine) as conn:
                await DeliveryRepository(conn).settle(outcomes, restart_counts=True)
            return
        async with connect(self._engine) as conn, driver.transaction(conn):
            settled = await DeliveryRepository(conn).settle(outcomes)
            repository = WebhookRepository(conn)
            for webhook_id, (reset, failures) in ended_per_webhook(outcomes, settled).items():
                await repository.note_outcomes(
                    webhook_id,
                    reset=reset,
                    failures=failures,
                    limit=self._settings.webhook_disable_after_failures,
                )


def _recording() -> AsyncRetrying:
    """Retries of recording outcomes while the database is away, within the lease."""
    return AsyncRetrying(
        retry=retry_if_exception_type(DatabaseUnavailable),
        wait=wait_exponential_jitter(initial=0.1, max=1.0),
        stop=stop_after_delay(RECORD_MARGIN_S),
        reraise=True,
    )


def _log_outcome(outcome: Outcome) -> None:
    delivery = outcome.delivery
    extra = {"task_id": str(delivery.task_id)}
    if outcome.status is DeliveryStatus.DELIVERED:
        log.info(
            "%s %s delivered (attempt %d)",
            delivery.channel,
            delivery.id,
            delivery.attempts,
            extra=extra,
        )
        return
    log.warning(
        "%s %s attempt %d failed (%s): %s",
        delivery.channel,
        delivery.id,
        delivery.attempts,
        "will retry" if outcome.status is DeliveryStatus.PENDING else "gave up",
        outcome.error,
        extra=extra,
    )


async def run_notifier(settings: Settings, stop: asyncio.Event | None = None) -> None:
    if not settings.secret_key:
        raise SystemExit("the notifier needs SECRET_KEY (the one the API has) to sign webhooks")
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    os.nice(settings.notifier_nice)
    engine = create_engine(settings, pool_size=CLAIM + 2)
    notifier = Notifier(engine, settings)
    loops = Supervisor()
    loops.start(*notifier.loops())
    log.info("notifier running")
    try:
        await stop.wait()
        await notifier.drain()
    finally:
        await loops.stop()
        await notifier.close()
        await engine.dispose()
    log.info("notifier stopped")
