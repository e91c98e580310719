"""The worker process: consume the task queue until SIGTERM/SIGINT, then stop cleanly."""

import asyncio
import contextlib
import logging
import os
import signal
import socket

import prometheus_client
from aio_pika.abc import AbstractQueue

from shared import broker
from shared.broker import Publisher, declare_topology
from shared.db import create_engine
from shared.relay import run_relay
from shared.settings import Settings
from worker.consumer import Consumer
from worker.heartbeat import run_heartbeat
from worker.reaper import run_reaper

log = logging.getLogger(__name__)


def worker_id() -> str:
    """Which worker wrote a log line: host (the container, under compose) and process."""
    return f"{socket.gethostname()}-{os.getpid()}"


async def run_worker(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    if settings.worker_metrics_port:
        prometheus_client.start_http_server(settings.worker_metrics_port)
    # A worker needs a connection per running task plus one each for its heartbeat, reaper
    # and relay; DB_POOL_SIZE is sized for the API, and N workers x 20 would exhaust
    # PostgreSQL's max_connections long before N workers are busy.
    engine = create_engine(settings, pool_size=settings.worker_prefetch + 3)
    # Publishing (retries, dead letters, relay) has a connection of its own, as RabbitMQ
    # advises: flow control on publishers then never slows down consuming.
    publisher = Publisher(settings)
    await publisher.start()
    consumer = Consumer(engine, publisher, settings)
    connection = await broker.connect(settings)
    background = [
        asyncio.create_task(run_heartbeat(engine, consumer.running, settings)),
        asyncio.create_task(run_reaper(engine, publisher, settings)),
        asyncio.create_task(run_relay(engine, publisher, settings)),
    ]
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=settings.worker_prefetch)
        queue = await declare_topology(channel, settings)
        consumer_tag = await queue.consume(consumer.on_message)
        log.info("worker consuming %r (prefetch %d)", settings.queue_name, settings.worker_prefetch)
        await stop.wait()
        await _shut_down(queue, consumer_tag, consumer, settings)
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await connection.close()
        await publisher.close()
        await engine.dispose()


async def _shut_down(
    queue: AbstractQueue, consumer_tag: str, consumer: Consumer, settings: Settings
) -> None:
    """Stop taking messages, let running tasks finish within the bound, hand back the rest."""
    await queue.cancel(consumer_tag)
    in_flight = set(consumer.in_flight)
    log.info("shutting down: waiting for %d task(s)", len(in_flight))
    if not in_flight:
        return
    _, unfinished = await asyncio.wait(in_flight, timeout=settings.worker_shutdown_timeout_seconds)
    for task in unfinished:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*unfinished, return_exceptions=True)
    log.info(
        "shutdown: %d finished, %d handed back", len(in_flight) - len(unfinished), len(unfinished)
    )
