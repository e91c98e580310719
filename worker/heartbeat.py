"""What a worker does for the tasks it runs: renew their leases and watch for cancellation."""

import asyncio
import logging
import time
import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import connect
from shared.errors import DatabaseUnavailable
from shared.repository import TaskRepository
from shared.settings import Settings
from worker.execution import Execution

log = logging.getLogger(__name__)


async def run_heartbeat(
    engine: AsyncEngine, running: dict[uuid.UUID, Execution], settings: Settings
) -> None:
    """Every CANCEL_POLL_SECONDS check cancellations; every third of the lease, renew it."""
    renew_every_s = settings.lease_seconds / 3
    last_renewal = time.monotonic()
    while True:
        await asyncio.sleep(settings.cancel_poll_seconds)
        if not running:
            continue
        renew = time.monotonic() - last_renewal >= renew_every_s
        try:
            async with connect(engine) as conn:
                repo = TaskRepository(conn)
                if renew:
                    await _renew(repo, running, settings.lease_seconds)
                    last_renewal = time.monotonic()
                await _stop_cancelled(repo, running)
        except DatabaseUnavailable:
            log.warning("heartbeat skipped: database unavailable")


async def _renew(repo: TaskRepository, running: dict[uuid.UUID, Execution], lease_s: float) -> None:
    owned = {(task_id, execution.task.attempts) for task_id, execution in running.items()}
    renewed = await repo.renew_leases(owned, lease_s=lease_s)
    for task_id in {task_id for task_id, _ in owned} - renewed:
        execution = running.get(task_id)
        if execution is not None:
            # Another attempt owns the task now: our outcome would be discarded anyway.
            log.warning("task %s: lease lost, stopping its handler", task_id)
            execution.cancel()


async def _stop_cancelled(repo: TaskRepository, running: dict[uuid.UUID, Execution]) -> None:
    for task_id in await repo.cancel_requested_among(list(running)):
        execution = running.get(task_id)
        if execution is not None and not execution.context.cancel_requested:
            log.info("task %s: cancel requested, stopping its handler", task_id)
            execution.cancel()
