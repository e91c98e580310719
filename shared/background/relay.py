"""The relay: publishes NEW tasks, whose message the broker never confirmed.

A task is NEW when the broker was down at create time, the API died between commit and
publish, or the reaper found its worker dead. Relays run in every API and worker process;
`FOR UPDATE SKIP LOCKED` gives each row to one of them, and a duplicate publish would be
harmless anyway (the claim runs a task once).
"""

import logging

from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.background.periodic import Loop
from shared.db.engine import connect, transaction
from shared.db.tasks import TaskRepository
from shared.domain.errors import BrokerUnavailable
from shared.messaging.publisher import Publisher
from shared.services.dispatch import dispatch
from shared.settings import Settings

log = logging.getLogger(__name__)

BACKLOG = Gauge("taskq_relay_backlog", "NEW tasks: stored, their message not yet confirmed")
BATCH_SIZE = 100  # tasks per relay step; a full batch is followed at once by the next


async def relay_once(
    engine: AsyncEngine, publisher: Publisher, settings: Settings, worker_id: str | None = None
) -> int:
    """Publish up to BATCH_SIZE NEW tasks, one transaction each; returns how many went out.

    One task per transaction: marking a task published also moves the owner's counters,
    and a transaction that held those rows across a batch of publishes would make other
    relays (which lock them in another order) deadlock, and creates wait behind it.
    """
    published = 0
    while published < BATCH_SIZE:
        try:
            if not await _relay_one(engine, publisher, settings, worker_id):
                break
        except BrokerUnavailable as exc:
            log.warning("relay stopped: %s", exc)
            break
        published += 1
    if published:
        log.info("relay published %d NEW task(s)", published)
    return published


async def _relay_one(
    engine: AsyncEngine, publisher: Publisher, settings: Settings, worker_id: str | None
) -> bool:
    """Publish the oldest NEW task no other relay holds; False when there is none."""
    # Leave the create path time to publish its own task (and give up) first.
    grace_s = settings.publish_timeout_seconds + 1
    async with transaction(engine) as conn:
        repo = TaskRepository(conn, worker_id=worker_id)
        found = await repo.unpublished(older_than_s=grace_s, limit=1)
        if not found:
            return False
        await dispatch(publisher, found[0], repo.mark_published)
    return True


def relay_loop(
    engine: AsyncEngine, publisher: Publisher, settings: Settings, worker_id: str | None = None
) -> Loop:
    """The relay as a supervised loop; a full batch is followed at once by the next."""

    async def step() -> bool:
        published = 0
        if publisher.connected:
            published = await relay_once(engine, publisher, settings, worker_id)
        async with connect(engine) as conn:
            BACKLOG.set(await TaskRepository(conn).count_new())
        return published == BATCH_SIZE

    return Loop("relay", settings.relay_interval_seconds, step)
