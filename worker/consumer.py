"""What a worker does with each message: claim, run, record, and only then acknowledge.

The database decides what a message means, never the delivery itself: a redelivered or
duplicate message for a task that is running, finished or cancelled runs nothing.
"""

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiormq
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import connect, until_available
from shared.db.tasks import TaskRepository
from shared.domain import transitions as t
from shared.domain.backoff import backoff
from shared.domain.enums import TaskStatus
from shared.domain.errors import (
    BrokerUnavailable,
    DatabaseUnavailable,
    MalformedMessage,
    TaskNotFound,
)
from shared.domain.records import TaskRecord
from shared.logs import log_task
from shared.messaging import messages
from shared.messaging.messages import Dispatched
from shared.messaging.publisher import Publisher
from shared.settings import Settings
from worker import metrics
from worker.execution import Execution, Outcome
from worker.heartbeat import WorkCounters

log = logging.getLogger(__name__)

T = TypeVar("T")


class Consumer:
    """Handles the deliveries of one worker; the broker's prefetch bounds how many at once."""

    def __init__(
        self, engine: AsyncEngine, publisher: Publisher, settings: Settings, worker_id: str
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._settings = settings
        self._worker_id = worker_id
        self._rng = random.Random()
        self.running: dict[uuid.UUID, Execution] = {}
        self.in_flight: set[asyncio.Task[None]] = set()
        self.counters = WorkCounters()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        """aio-pika's callback: process the message in its own task and return at once."""
        task = asyncio.create_task(self._process(message))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        if message.redelivered:
            metrics.REDELIVERIES.inc()
        try:
            dispatched = messages.decode_dispatched(message.body)
        except MalformedMessage as exc:
            await self._dead_letter(message, str(exc))
            return
        claimed_at = time.monotonic()
        task = await self._with_db(
            lambda repo: repo.claim(
                dispatched.task_id, lease_s=self._lease_s, generation=dispatched.generation
            )
        )
        if task is None:
            await self._skip(message, dispatched)
            return
        _say(task, "IN_PROGRESS", "task %s IN_PROGRESS (attempt %d)", task.id, task.attempts)
        if task.started_at is not None:
            metrics.QUEUE_WAIT.observe((task.started_at - task.created_at).total_seconds())
        try:
            outcome = await self._run(task, lease_deadline=claimed_at + self._lease_s)
        except asyncio.CancelledError:
            await self._hand_back(message, task)
            raise
        await self._record(message, task, outcome)

    @property
    def _lease_s(self) -> float:
        return self._settings.lease_seconds

    async def _run(self, task: TaskRecord, lease_deadline: float) -> Outcome:
        execution = Execution(task, self._settings, lease_deadline)
        self.running[task.id] = execution
        started = time.perf_counter()
        try:
            with metrics.IN_FLIGHT.track_inprogress():
                return await execution.outcome()
        finally:
            del self.running[task.id]
            metrics.PROCESSING.labels(task.kind).observe(time.perf_counter() - started)

    async def _record(
        self, message: AbstractIncomingMessage, task: TaskRecord, outcome: Outcome
    ) -> None:
        transition = outcome.transition
        if transition is None:
            # Given up with its lease: the reaper settles it once the lease has run out.
            _say(task, None, "task %s: attempt %d given up", task.id, task.attempts)
            await _settle(message.ack())
            return
        if transition is t.FAIL and task.failed_attempts <= task.max_retries:
            await self._retry(message, task, outcome.error or "")
            return
        finished = await self._with_db(
            lambda repo: repo.finish(
                task.id,
                transition=transition,
                attempt=task.attempts,
                result=outcome.result,
                error=outcome.error,
                reason=outcome.reason,
            )
        )
        if finished is None:
            _say(
                task,
                None,
                "task %s: attempt %d was superseded; outcome dropped",
                task.id,
                task.attempts,
                level=logging.WARNING,
            )
        else:
            status = finished.status.value
            self.counters.processed += 1
            self.counters.failed += int(finished.status is TaskStatus.FAILED)
            metrics.FINISHED.labels(status.lower(), task.kind).inc()
            _say(task, status, "task %s %s (attempt %d)", task.id, status, task.attempts)
            log.debug("task %s result: %r", task.id, outcome.result)
        await _settle(message.ack())

    async def _retry(self, message: AbstractIncomingMessage, task: TaskRecord, error: str) -> None:
        """Back to PENDING, then a delayed message; if that publish fails, the original
        message is requeued instead and the retry simply comes sooner."""
        settings = self._settings
        wait = backoff(
            task.failed_attempts, settings.retry_base_seconds, settings.retry_max_seconds, self._rng
        )
        reason = f"retry in {wait.delay_s:.1f} s"
        retried = await self._with_db(
            lambda repo: repo.retry(task.id, attempt=task.attempts, error=error, reason=reason)
        )
        if retried is None:
            log.warning("task %s: attempt %d was superseded; retry dropped", task.id, task.attempts)
            await _settle(message.ack())
            return
        self.counters.processed += 1
        self.counters.failed += 1
        try:
            await self._publisher.publish_retry(
                task.id, task.priority, task.dispatch_generation, wait
            )
        except BrokerUnavailable as exc:
            log.warning("task %s: retry not delayed (%s); requeueing now", task.id, exc)
            await _settle(message.nack(requeue=True))
            return
        metrics.FINISHED.labels("retried", task.kind).inc()
        _say(
            task,
            "PENDING",
            "task %s PENDING: retry in %.2fs (attempt %d failed)",
            task.id,
            wait.delay_s,
            task.attempts,
        )
        await _settle(message.ack())

    async def _skip(self, message: AbstractIncomingMessage, dispatched: Dispatched) -> None:
        """The claim found nothing to start: say why, and settle the message without running.

        A stale message (an older dispatch of a re-prioritised task) is acknowledged and
        counted, never dead-lettered: the current dispatch has a message of its own.
        """
        task_id = dispatched.task_id
        try:
            current = await self._with_db(lambda repo: repo.get(task_id))
        except TaskNotFound:
            await self._dead_letter(message, f"unknown task {task_id}")
            return
        generation = dispatched.generation
        if generation is not None and generation != current.dispatch_generation:
            metrics.STALE_MESSAGES.inc()
            _say(
                current,
                current.status.value,
                "task %s: stale message (dispatch %d, current %d) acknowledged",
                task_id,
                generation,
                current.dispatch_generation,
            )
            await _settle(message.ack())
            return
        _say(
            current,
            current.status.value,
            "task %s not started: it is %s",
            task_id,
            current.status.value,
        )
        await _settle(message.ack())

    async def _dead_letter(self, message: AbstractIncomingMessage, reason: str) -> None:
        """Park an unusable message in the DLQ with the reason, never requeue it in a loop."""
        log.warning("dead-lettering message %s: %s", message.message_id, reason)
        metrics.DEAD_LETTERED.inc()
        try:
            await self._publisher.dead_letter(message.body, reason, message.message_id)
        except BrokerUnavailable:
            # The queue's own dead-letter route still gets it there, without our reason.
            await _settle(message.reject(requeue=False))
            return
        await _settle(message.ack())

    async def _hand_back(self, message: AbstractIncomingMessage, task: TaskRecord) -> None:
        """Shutdown interrupted the handler: requeue the task so another worker runs it."""
        try:
            await self._with_db_once(lambda repo: repo.release(task.id, attempt=task.attempts))
        except DatabaseUnavailable:
            log.warning("task %s: could not release; the reaper will when its lease ends", task.id)
        await _settle(message.nack(requeue=True))
        _say(task, "PENDING", "task %s handed back to the queue (shutdown)", task.id)

    async def _with_db(self, work: Callable[[TaskRepository], Awaitable[T]]) -> T:
        try:
            return await self._with_db_once(work)
        except DatabaseUnavailable:
            pass  # the retry policy below only once it is needed: it costs a call each time
        async for attempt in until_available(log, "retrying"):
            with attempt:
                return await self._with_db_once(work)
        raise AssertionError("unreachable: tenacity retries until success")

    async def _with_db_once(self, work: Callable[[TaskRepository], Awaitable[T]]) -> T:
        async with connect(self._engine) as conn:
            return await work(TaskRepository(conn, worker_id=self._worker_id))


def _say(
    task: TaskRecord, status: str | None, message: str, *args: object, level: int = logging.INFO
) -> None:
    """Log about a task; JSON logs carry its id, status and attempt as fields of their own."""
    log_task(log, level, message, *args, task_id=task.id, status=status, attempt=task.attempts)


async def _settle(settlement: Awaitable[object]) -> None:
    """Ack, nack or reject. On a channel that died since the delivery this cannot work: the
    broker redelivers the message, and the database turns it into a harmless duplicate."""
    try:
        await settlement
    except (AMQPError, aiormq.exceptions.ChannelInvalidStateError, ConnectionError) as exc:
        log.warning("could not settle a message (%r); it will come back as a duplicate", exc)
