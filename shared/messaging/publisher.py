"""The confirmed publisher, shared by the API and the worker, and the broker connection."""

import asyncio
import contextlib
import logging
import uuid

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from shared.domain.backoff import Backoff
from shared.domain.enums import TaskPriority
from shared.domain.errors import BrokerUnavailable
from shared.messaging.messages import task_message
from shared.messaging.topology import (
    DEAD_LETTER_REASON_HEADER,
    dead_letter_queue_name,
    declare_topology,
    delay_queue_name,
)
from shared.settings import Settings

log = logging.getLogger(__name__)


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

    async def publish(self, task_id: uuid.UUID, priority: TaskPriority, generation: int) -> None:
        """Queue a task's dispatch; BrokerUnavailable if the broker does not confirm it."""
        message = task_message(task_id, priority, generation=generation)
        await self._send(message, self._settings.queue_name)

    async def publish_retry(
        self, task_id: uuid.UUID, priority: TaskPriority, generation: int, wait: Backoff
    ) -> None:
        """Queue a task's retry after `wait`, through the delay queue of its level."""
        message = task_message(task_id, priority, generation=generation, expiration_s=wait.delay_s)
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

    async def ready_counts(self, queue_names: list[str]) -> dict[str, int] | None:
        """Ready messages in each queue, by passive declares; None if the broker is away.

        On a channel of their own: a passive declare of a missing queue closes its channel.
        """
        connection = self._connection
        if connection is None or not self.connected:
            return None
        try:
            async with asyncio.timeout(self._settings.publish_timeout_seconds):
                channel = await connection.channel()
                try:
                    counts = {}
                    for name in queue_names:
                        queue = await channel.declare_queue(name, passive=True)
                        counts[name] = int(queue.declaration_result.message_count or 0)
                    return counts
                finally:
                    if not channel.is_closed:
                        await channel.close()
        except (
            TimeoutError,
            ConnectionError,
            aio_pika.exceptions.AMQPError,
            aiormq.exceptions.ChannelInvalidStateError,
        ) as exc:
            log.warning("could not read queue depths: %r", exc)
            return None

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
