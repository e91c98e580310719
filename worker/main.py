"""The worker process: consume the task queue until SIGTERM/SIGINT, then stop cleanly."""

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket

import prometheus_client
from aio_pika.abc import AbstractQueue
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.background.periodic import Supervisor
from shared.background.relay import relay_loop
from shared.db.engine import connect, create_engine, until_available
from shared.db.wakeups import Wakeups
from shared.db.workers import WorkerIdentity, WorkerRepository
from shared.domain.errors import DatabaseUnavailable
from shared.messaging import publisher as broker
from shared.messaging.publisher import Publisher
from shared.messaging.topology import declare_topology
from shared.settings import Settings
from worker.consumer import Consumer
from worker.heartbeat import Heartbeat
from worker.reaper import reaper_loop

log = logging.getLogger(__name__)


def worker_id() -> str:
    """Unique per process, readable in logs: host (the container, under compose), process
    id, and a random suffix, since a pid is reused once its process is gone."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def serve_metrics(port: int) -> None:
    """Serve /metrics on `port`; a taken port costs this worker its metrics, not its work."""
    if not port:
        return
    try:
        prometheus_client.start_http_server(port)
    except OSError as exc:
        log.warning(
            "metrics off: port %d is taken (%s); give each worker on this host its own "
            "WORKER_METRICS_PORT to scrape them all",
            port,
            exc.strerror,
        )


async def run_worker(settings: Settings, identity: str, stop: asyncio.Event | None = None) -> None:
    """Run one worker until `stop` is set (by SIGTERM or SIGINT when none is given)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    serve_metrics(settings.worker_metrics_port)
    # A worker needs a connection per running task plus one each for its heartbeat, reaper
    # and relay; DB_POOL_SIZE is sized for the API, and N workers x 20 would exhaust
    # PostgreSQL's max_connections long before N workers are busy.
    # ... and one for the event stream's wake-ups.
    engine = create_engine(settings, pool_size=settings.worker_prefetch + 4)
    wakeups = Wakeups(engine)
    wakeups.install()
    # Publishing (retries, dead letters, relay) has a connection of its own, as RabbitMQ
    # advises: flow control on publishers then never slows down consuming.
    publisher = Publisher(settings)
    await publisher.start()
    consumer = Consumer(engine, publisher, settings, identity)
    heartbeat = Heartbeat(engine, settings, identity, consumer.running, consumer.counters)
    await _register(engine, settings, identity, heartbeat.period_s)
    connection = await broker.connect(settings)
    loops = Supervisor()
    loops.start(
        heartbeat.loop(),
        reaper_loop(engine, publisher, settings, identity),
        relay_loop(engine, publisher, settings, identity),
        wakeups.loop(),
    )
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=settings.worker_prefetch)
        queue = await declare_topology(channel, settings)
        consumer_tag = await queue.consume(consumer.on_message)
        log.info("worker consuming %r (prefetch %d)", settings.queue_name, settings.worker_prefetch)
        await stop.wait()
        await _shut_down(queue, consumer_tag, consumer, settings)
        await loops.stop()  # no heartbeat may add the same counts as the last word below
        await _deregister(engine, identity, consumer)
    finally:
        await loops.stop()
        await connection.close()
        await publisher.close()
        await engine.dispose()


async def _register(engine: AsyncEngine, settings: Settings, identity: str, beat_s: float) -> None:
    """Put this worker in the registry; wait for the database if it is away."""
    row = WorkerIdentity(
        id=identity,
        hostname=socket.gethostname(),
        pid=os.getpid(),
        queue=settings.queue_name,
        prefetch=settings.worker_prefetch,
        heartbeat_seconds=beat_s,
    )
    async for attempt in until_available(log, "cannot register yet"):
        with attempt:
            async with connect(engine) as conn:
                await WorkerRepository(conn).register(row)


async def _deregister(engine: AsyncEngine, identity: str, consumer: Consumer) -> None:
    """Mark this worker stopped, with its last counts; if the database is away, its row
    simply goes offline."""
    counters = consumer.counters
    try:
        async with connect(engine) as conn:
            await WorkerRepository(conn).stopped(
                identity, processed=counters.processed, failed=counters.failed
            )
    except DatabaseUnavailable:
        log.warning("could not mark this worker stopped: database unavailable")


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
