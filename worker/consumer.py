"""What a worker does with each message: claim, run, record, and only then acknowledge."""

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from shared import messages
from shared.db import connect
from shared.errors import DatabaseUnavailable, MalformedMessage, TaskNotFound
from shared.models import TaskRecord
from shared.repository import TaskRepository
from shared.settings import Settings
from worker.execution import Execution, Outcome

log = logging.getLogger(__name__)

T = TypeVar("T")

# While the database is down the worker holds its messages (unacknowledged, so nothing is
# lost) and retries with growing pauses instead of spinning.
DB_RETRY_INITIAL_S = 0.2
DB_RETRY_MAX_S = 5.0


class Consumer:
    """Handles the deliveries of one worker; the broker's prefetch bounds how many at once."""

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self.running: dict[uuid.UUID, Execution] = {}
        self.in_flight: set[asyncio.Task[None]] = set()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        """aio-pika's callback: process the message in its own task and return at once."""
        task = asyncio.create_task(self._process(message))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        try:
            task_id = messages.decode(message.body)
        except MalformedMessage as exc:
            log.warning("dead-lettering message %s: %s", message.message_id, exc)
            await message.reject(requeue=False)
            return
        task = await self._with_db(lambda repo: repo.claim(task_id))
        if task is None:
            await self._skip(message, task_id)
            return
        log.info("task %s IN_PROGRESS (attempt %d)", task.id, task.attempts)
        try:
            outcome = await self._run(task)
        except asyncio.CancelledError:
            await self._hand_back(message, task)
            raise
        await self._record(task, outcome)
        await message.ack()

    async def _run(self, task: TaskRecord) -> Outcome:
        execution = Execution(task, self._settings)
        self.running[task.id] = execution
        try:
            return await execution.outcome()
        finally:
            del self.running[task.id]

    async def _record(self, task: TaskRecord, outcome: Outcome) -> None:
        finished = await self._with_db(
            lambda repo: repo.finish(
                task.id,
                transition=outcome.transition,
                attempt=task.attempts,
                result=outcome.result,
                error=outcome.error,
            )
        )
        if finished is None:
            log.warning(
                "task %s: attempt %d was superseded; outcome dropped", task.id, task.attempts
            )
            return
        log.info("task %s %s", task.id, finished.status.value)

    async def _skip(self, message: AbstractIncomingMessage, task_id: uuid.UUID) -> None:
        """The claim found nothing to start: say why, and settle the message without running."""
        try:
            current: TaskRecord | None = await self._with_db(lambda repo: repo.get(task_id))
        except TaskNotFound:
            current = None
        if current is None:
            log.warning("dead-lettering message for unknown task %s", task_id)
            await message.reject(requeue=False)
            return
        log.info("task %s not started: it is %s", task_id, current.status.value)
        await message.ack()

    async def _hand_back(self, message: AbstractIncomingMessage, task: TaskRecord) -> None:
        """Shutdown interrupted the handler: requeue the task so another worker runs it."""
        try:
            await self._with_db_once(lambda repo: repo.release(task.id, attempt=task.attempts))
        finally:
            await message.nack(requeue=True)
        log.info("task %s handed back to the queue (shutdown)", task.id)

    async def _with_db(self, work: Callable[[TaskRepository], Awaitable[T]]) -> T:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(DatabaseUnavailable),
            wait=wait_exponential_jitter(initial=DB_RETRY_INITIAL_S, max=DB_RETRY_MAX_S),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._with_db_once(work)
        raise AssertionError("unreachable: tenacity retries until success")

    async def _with_db_once(self, work: Callable[[TaskRepository], Awaitable[T]]) -> T:
        async with connect(self._engine) as conn:
            return await work(TaskRepository(conn))
