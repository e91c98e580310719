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
from shared.backoff import Backoff, level_delays_s
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


def delay_queue_name(queue_name: str, level: int) -> str:
    return f"{queue_name}.delay.{level}"


def topology(settings: Settings) -> list[QueueSpec]:
    """Every queue the service uses; the main task queue comes last.

    - `<queue>.dlq`: messages no worker can use, with the reason in a header.
    - `<queue>.delay.<n>`: retries waiting out their backoff; an expired message is
      dead-lettered back into the main queue, keeping its priority.
    - `<queue>`: the task queue, a classic priority queue.
    """
    name = settings.queue_name
    dlq = dead_letter_queue_name(name)
    back_to_main = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": name}
    levels = level_delays_s(settings.retry_base_seconds, settings.retry_max_seconds)
    return [
        QueueSpec(dlq, {}),
        *(QueueSpec(delay_queue_name(name, level), back_to_main) for level in range(len(levels))),
        QueueSpec(
            name,
            {
                "x-max-priority": MAX_PRIORITY,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": dlq,
            },
        ),
    ]


async def declare_topology(channel: AbstractChannel, settings: Settings) -> AbstractQueue:
    """Declare every queue (durable) and return the main task queue."""
    declared = [
        await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        for spec in topology(settings)
    ]
    return declared[-1]


def task_message(
    task_id: uuid.UUID, priority: TaskPriority, *, expiration_s: float | None = None
) -> aio_pika.Message:
    return aio_pika.Message(
        messages.encode(task_id),
        content_type=messages.CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=priority.broker_priority,
        message_id=str(task_id),
        expiration=expiration_s,
    )


# The header a dead-lettered message carries to say why no worker could use it.
DEAD_LETTER_REASON_HEADER = "x-taskq-reason"


async def connect(settings: Settings) -> AbstractRobustConnection:
    """A connection that reconnects by itself, every BROKER_RETRY_SECONDS while the broker
    is away, and restores its channels, queues and consumers when it is back."""
    return await aio_pika.connect_robust(
        settings.amqp_url,
        timeout=settings.publish_timeout_seconds,
        reconnect_interval=settings.broker_retry_seconds,
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
        """Queue a task; BrokerUnavailable if the broker does not confirm it in time."""
        await self._send(task_message(task_id, priority), self._settings.queue_name)

    async def publish_retry(
        self, task_id: uuid.UUID, priority: TaskPriority, wait: Backoff
    ) -> None:
        """Queue a task's retry after `wait`, through the delay queue of its level."""
        message = task_message(task_id, priority, expiration_s=wait.delay_s)
        await self._send(message, delay_queue_name(self._settings.queue_name, wait.level))

    async def dead_letter(self, body: bytes, reason: str, message_id: str | None = None) -> None:
        """Park a message no worker can use in the dead-letter queue, saying why."""
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            headers={DEAD_LETTER_REASON_HEADER: reason},
        )
        await self._send(message, dead_letter_queue_name(self._settings.queue_name))

    async def _send(self, message: aio_pika.Message, routing_key: str) -> None:
        channel = self._channel
        if channel is None or not self.connected:
            raise BrokerUnavailable("not connected to the broker")
        try:
            async with asyncio.timeout(self._settings.publish_timeout_seconds):
                await channel.default_exchange.publish(
                    message, routing_key=routing_key, mandatory=True
                )
        except (
            TimeoutError,
            ConnectionError,
            aio_pika.exceptions.AMQPError,
            aiormq.exceptions.ChannelInvalidStateError,
        ) as exc:
            raise BrokerUnavailable(f"publish to {routing_key} failed: {exc!r}") from exc

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
        connection = await connect(self._settings)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await declare_topology(channel, self._settings)
        except BaseException:
            await connection.close()
            raise
        channel.close_callbacks.add(_log_close)
        self._connection, self._channel = connection, channel
        log.info("publisher connected to the broker")


def _log_close(channel: object, reason: BaseException | None) -> None:
    log.warning("publisher channel closed: %r", reason)
