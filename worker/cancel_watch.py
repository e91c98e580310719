"""Stops running handlers whose task the API asked to cancel (DELETE on an IN_PROGRESS task)."""

import asyncio
import logging
import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import connect
from shared.errors import DatabaseUnavailable
from shared.repository import TaskRepository
from worker.execution import Execution

log = logging.getLogger(__name__)


async def watch_cancellations(
    engine: AsyncEngine, running: dict[uuid.UUID, Execution], interval_s: float
) -> None:
    """Every `interval_s`, one query for the tasks this worker runs; cancel the flagged ones."""
    while True:
        await asyncio.sleep(interval_s)
        if not running:
            continue
        try:
            async with connect(engine) as conn:
                flagged = await TaskRepository(conn).cancel_requested_among(list(running))
        except DatabaseUnavailable:
            log.warning("cannot check for cancellations: database unavailable")
            continue
        for task_id in flagged:
            execution = running.get(task_id)
            if execution is not None and not execution.context.cancel_requested:
                log.info("task %s: cancel requested, stopping its handler", task_id)
                execution.cancel()
