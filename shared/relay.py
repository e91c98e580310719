"""The relay: publishes NEW tasks, whose message the broker never confirmed.

A task is NEW when the broker was down at create time, the API died between commit and
publish, or the reaper found its worker dead. Relays run in every API and worker process;
`FOR UPDATE SKIP LOCKED` gives each row to one of them, and a duplicate publish would be
harmless anyway (the claim runs a task once).
"""

import asyncio
import logging

from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.broker import Publisher
from shared.db import connect, transaction
from shared.errors import BrokerUnavailable, DatabaseUnavailable
from shared.repository import TaskRepository
from shared.settings import Settings

log = logging.getLogger(__name__)

BACKLOG = Gauge("taskq_relay_backlog", "NEW tasks: stored, their message not yet confirmed")
BATCH_SIZE = 100  # rows locked per transaction; a full batch is followed at once by the next


async def relay_once(engine: AsyncEngine, publisher: Publisher, settings: Settings) -> int:
    """Publish up to one batch of NEW tasks; returns how many went out."""
    # Leave the create path time to publish its own task (and give up) first.
    grace_s = settings.publish_timeout_seconds + 1
    published = 0
    async with transaction(engine) as conn:
        repo = TaskRepository(conn)
        for task in await repo.unpublished(older_than_s=grace_s, limit=BATCH_SIZE):
            try:
                await publisher.publish(task.id, task.priority)
            except BrokerUnavailable as exc:
                log.warning("relay stopped: %s", exc)
                break
            await repo.mark_published(task.id)
            published += 1
    if published:
        log.info("relay published %d NEW task(s)", published)
    return published


async def run_relay(engine: AsyncEngine, publisher: Publisher, settings: Settings) -> None:
    """Relay forever; pauses while the broker or the database is unreachable."""
    while True:
        published = 0
        try:
            if publisher.connected:
                published = await relay_once(engine, publisher, settings)
            async with connect(engine) as conn:
                BACKLOG.set(await TaskRepository(conn).count_new())
        except DatabaseUnavailable:
            log.warning("relay paused: database unavailable")
        if published < BATCH_SIZE:
            await asyncio.sleep(settings.relay_interval_seconds)
