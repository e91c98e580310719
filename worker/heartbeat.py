"""The worker's heartbeat: keeps its leases and its registry row fresh, and stops handlers
that were cancelled or whose lease can no longer be kept.

Every CANCEL_POLL_SECONDS it looks for cancel requests of the tasks it runs; every third of
the lease it beats: one statement renews the leases, marks the worker seen and adds to its
processed/failed counters. A handler whose lease is about to run out unrenewed (the
database is away, or the heartbeat keeps failing) is stopped before another worker could
start the same task, and records nothing: the reaper settles it.
"""

import logging
import time
import uuid
from dataclasses import dataclass

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.background.periodic import Loop
from shared.db.engine import connect
from shared.db.tasks import TaskRepository
from shared.db.workers import WorkerRepository
from shared.settings import Settings
from worker.execution import Execution

log = logging.getLogger(__name__)

LEASES_GIVEN_UP = Counter(
    "taskq_worker_leases_given_up_total",
    "Attempts stopped because their lease was lost or could not be renewed in time",
)


@dataclass
class WorkCounters:
    """Attempts this worker finished, not yet added to its registry row."""

    processed: int = 0
    failed: int = 0


class Heartbeat:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        worker_id: str,
        running: dict[uuid.UUID, Execution],
        counters: WorkCounters,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._worker_id = worker_id
        self._running = running
        self._counters = counters
        self.period_s = settings.lease_seconds / 3
        self._last_beat = float("-inf")

    def loop(self) -> Loop:
        return Loop("heartbeat", self._settings.cancel_poll_seconds, self.tick)

    async def tick(self) -> None:
        # First, with no database needed: a failing heartbeat must still stop these.
        self._give_up_expiring_leases()
        if time.monotonic() - self._last_beat >= self.period_s:
            await self.beat()
        if self._running:
            await self._stop_cancelled()

    async def beat(self) -> None:
        """Renew the leases, mark the worker seen, flush its counters: one statement."""
        owned = {(task_id, run.task.attempts) for task_id, run in self._running.items()}
        processed, failed = self._counters.processed, self._counters.failed
        sent_at = time.monotonic()
        async with connect(self._engine) as conn:
            renewed = await WorkerRepository(conn).beat(
                self._worker_id,
                owned=owned,
                lease_s=self._settings.lease_seconds,
                processed=processed,
                failed=failed,
            )
        self._counters.processed -= processed
        self._counters.failed -= failed
        self._last_beat = sent_at
        for task_id, _ in owned:
            run = self._running.get(task_id)
            if run is None:
                continue
            if task_id in renewed:
                run.lease_deadline = sent_at + self._settings.lease_seconds
            else:
                self._give_up(run, "lease lost to another attempt")

    def _give_up_expiring_leases(self) -> None:
        margin_s = self._settings.cancel_poll_seconds * 2
        for run in list(self._running.values()):
            if run.lease_expiring(margin_s):
                self._give_up(run, "lease could not be renewed in time")

    def _give_up(self, run: Execution, why: str) -> None:
        if run.abandoned:
            return
        LEASES_GIVEN_UP.inc()
        log.warning("task %s: %s; stopping its handler", run.task.id, why)
        run.abandon()

    async def _stop_cancelled(self) -> None:
        async with connect(self._engine) as conn:
            flagged = await TaskRepository(conn).cancel_requested_among(list(self._running))
        for task_id in flagged:
            run = self._running.get(task_id)
            if run is not None and not run.context.cancel_requested:
                log.info("task %s: cancel requested, stopping its handler", task_id)
                run.cancel()
