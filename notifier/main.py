"""The notifier process: two supervised loops until SIGTERM/SIGINT.

- fan-out: reads settled history past its cursor and makes the deliveries it calls for,
  in one transaction with moving the cursor (one notifier at a time does this);
- deliver: claims due deliveries (any number of notifiers at once) and attempts them.
"""

import asyncio
import contextlib
import logging
import os
import signal
import uuid

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from notifier import mail, webhooks
from notifier.planning import plan, wanted_statuses
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
# A lease lasts an attempt's WEBHOOK_TIMEOUT_SECONDS and this margin to record its outcome,
# retried this long through a database blip: unrecorded, it would be sent again.
RECORD_MARGIN_S = 5.0
ATTEMPTS = Counter("taskq_notifier_attempts_total", "Delivery attempts", ["channel", "outcome"])


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
        bound_s = self._settings.webhook_timeout_seconds + RECORD_MARGIN_S
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bound_s), self._attempting:
                pass

    async def close(self) -> None:
        await self._client.close()

    async def fan_out(self) -> bool:
        """Deliveries for the next settled events; True if more may be waiting."""
        async with connect(self._engine) as conn, driver.transaction(conn):
            history = EventRepository(conn)
            outbox = DeliveryRepository(conn)
            position = await outbox.lock_cursor()
            if position is None:
                return False  # another notifier is at it
            events = await history.settled_after(position, limit=BATCH)
            if not events:
                return False
            subscriptions = await WebhookRepository(conn).enabled_with_scope()
            recipients = await UserRepository(conn).email_recipients()
            statuses = wanted_statuses(subscriptions, recipients)
            wanted = [event for event in events if event.to_status in statuses]
            tasks = await TaskRepository(conn).many({event.task_id for event in wanted})
            await outbox.add(plan(wanted, subscriptions, recipients, tasks))
            await outbox.advance(events[-1].position)
        return len(events) == BATCH

    async def deliver(self) -> bool:
        """Attempt what is due; True if a full batch was claimed (more may be due).

        A batch costs three statements however large: the claim, one read of its
        recipients, one write of its outcomes (and one per webhook whose count moved).
        """
        if self._draining:
            return False
        async with self._attempting:
            return await self._deliver_batch()

    async def _deliver_batch(self) -> bool:
        lease_s = self._settings.webhook_timeout_seconds + RECORD_MARGIN_S
        async with connect(self._engine) as conn:
            due = await DeliveryRepository(conn).claim_due(limit=CLAIM, lease_s=lease_s)
            if not due:
                return False
            hooks = await WebhookRepository(conn).by_ids(
                {d.webhook_id for d in due if d.webhook_id is not None}
            )
            people = await UserRepository(conn).by_ids(
                {d.user_id for d in due if d.user_id is not None}
            )
        attempts = [self._attempt(delivery, hooks, people) for delivery in due]
        outcomes = [
            self._outcome(d, a) for d, a in zip(due, await asyncio.gather(*attempts), strict=True)
        ]
        await self._record(outcomes)
        return len(due) == CLAIM

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
        async with connect(self._engine) as conn, driver.transaction(conn):
            settled = await DeliveryRepository(conn).settle(outcomes)
            repository = WebhookRepository(conn)
            for webhook_id, (reset, failures) in _ended_per_webhook(outcomes, settled).items():
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


def _ended_per_webhook(
    outcomes: list[Outcome], settled: set[uuid.UUID]
) -> dict[uuid.UUID, tuple[bool, int]]:
    """Per webhook, of its deliveries that ended here: whether one was delivered, and how
    many failed after the last one delivered (those continue the count in a row)."""
    ended: dict[uuid.UUID, tuple[bool, int]] = {}
    for outcome in outcomes:
        webhook_id = outcome.delivery.webhook_id
        if webhook_id is None or outcome.delivery.id not in settled:
            continue
        reset, failures = ended.get(webhook_id, (False, 0))
        if outcome.status is DeliveryStatus.DELIVERED:
            ended[webhook_id] = (True, 0)
        elif outcome.status is DeliveryStatus.FAILED:
            ended[webhook_id] = (reset, failures + 1)
    return ended


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
