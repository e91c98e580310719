"""The RabbitMQ topology and the confirmed publisher, shared by the API and the worker.

RabbitMQ refuses to re-declare a queue with different arguments (PRECONDITION_FAILED), so
every queue and its arguments are declared here and nowhere else.
"""

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractQueue, AbstractRobustConnection

from shared import messages
from shared.enums import TaskPriority
from shared.errors import BrokerUnavailable
from shared.settings import Settings

log = logging.getLogger(__name__)

# The queue's x-max-priority. Classic queues keep one sub-queue per level, so few levels are
# cheap; 10 leaves room between LOW/MEDIUM/HIGH (1/5/9) for levels added later.
MAX_PRIORITY = 10


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any]


def dead_letter_queue_name(queue_name: str) -> str:
    return f"{queue_name}.dlq"


def topology(queue_name: str) -> list[QueueSpec]:
    """Every queue the service uses, dead-letter queue first so the main queue can point at it."""
    dlq = dead_letter_queue_name(queue_name)
    return [
        QueueSpec(dlq, {}),
        QueueSpec(
            queue_name,
            {
                "x-max-priority": MAX_PRIORITY,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": dlq,
            },
        ),
    ]


async def declare_topology(channel: AbstractChannel, queue_name: str) -> AbstractQueue:
    """Declare every queue (durable) and return the main task queue."""
    declared = [
        await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        for spec in topology(queue_name)
    ]
    return declared[-1]


def task_message(task_id: uuid.UUID, priority: TaskPriority) -> aio_pika.Message:
    return aio_pika.Message(
        messages.encode(task_id),
        content_type=messages.CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=priority.broker_priority,
        message_id=str(task_id),
    )


class Publisher:
    """Publishes task messages with publisher confirms; never blocks longer than its timeout.

    It connects in the background, so a process starts even while the broker is down, and
    aio-pika's robust connection reconnects it after that.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._connector: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._connector = asyncio.create_task(self._connect_until_done(), name="broker-connect")

    async def wait_connected(self, timeout_s: float) -> bool:
        """Whether the first connection is up within `timeout_s`."""
        if self._connector is None:
            return False
        done, _ = await asyncio.wait({self._connector}, timeout=timeout_s)
        return bool(done)

    @property
    def connected(self) -> bool:
        return self._channel is not None and not self._channel.is_closed

    async def publish(self, task_id: uuid.UUID, priority: TaskPriority) -> None:
        channel = self._channel
        if channel is None or not self.connected:
            raise BrokerUnavailable("not connected to the broker")
        try:
            async with asyncio.timeout(self._settings.publish_timeout_seconds):
                await channel.default_exchange.publish(
                    task_message(task_id, priority),
                    routing_key=self._settings.queue_name,
                    mandatory=True,
                )
        except (
            TimeoutError,
            ConnectionError,
            aio_pika.exceptions.AMQPError,
            aiormq.exceptions.ChannelInvalidStateError,
        ) as exc:
            raise BrokerUnavailable(f"publish of task {task_id} failed: {exc!r}") from exc

    async def close(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self._channel is not None:
            self._channel.close_callbacks.discard(_log_close)
        if self._connection is not None:
            await self._connection.close()

    async def _connect_until_done(self) -> None:
        while True:
            try:
                await self._connect()
                return
            except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
                log.warning("broker unreachable (%r); retrying", exc)
                await asyncio.sleep(self._settings.broker_retry_seconds)

    async def _connect(self) -> None:
        connection = await aio_pika.connect_robust(
            self._settings.amqp_url, timeout=self._settings.publish_timeout_seconds
        )
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await declare_topology(channel, self._settings.queue_name)
        except BaseException:
            await connection.close()
            raise
        channel.close_callbacks.add(_log_close)
        self._connection, self._channel = connection, channel
        log.info("publisher connected to the broker")


def _log_close(channel: object, reason: BaseException | None) -> None:
    log.warning("publisher channel closed: %r", reason)
