"""The workers aggregate: which worker processes exist, when each was last seen, what they ran.

A worker writes its own row: it registers at start, its heartbeat refreshes it (in the same
statement that renews its tasks' leases), and it marks itself stopped on a graceful exit.
"""

import uuid
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Interval, RowMapping, bindparam, func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.engine import translate_unavailable
from shared.db.tables import tasks, workers
from shared.domain.enums import TaskStatus
from shared.domain.records import WorkerRecord
from shared.domain.workers import worker_state

# Stopped and offline workers stay listed this long after they were last seen.
LISTED_FOR = timedelta(days=1)


@dataclass(frozen=True)
class WorkerIdentity:
    id: str
    hostname: str
    pid: int
    queue: str
    prefetch: int
    heartbeat_seconds: float


class WorkerRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def register(self, identity: WorkerIdentity) -> None:
        statement = insert(workers).values(
            id=identity.id,
            hostname=identity.hostname,
            pid=identity.pid,
            queue=identity.queue,
            prefetch=identity.prefetch,
            heartbeat_seconds=identity.heartbeat_seconds,
        )
        with translate_unavailable():
            await self._conn.execute(statement)

    async def beat(
        self,
        worker_id: str,
        *,
        owned: Collection[tuple[uuid.UUID, int]],
        lease_s: float,
        processed: int,
        failed: int,
    ) -> set[uuid.UUID]:
        """One heartbeat: renew the leases of these (task, attempt) pairs, mark the worker
        seen and add to its counters, in one statement. Returns the tasks still owned."""
        seen = (
            update(workers)
            .where(workers.c.id == worker_id)
            .values(
                last_seen_at=func.now(),
                processed=workers.c.processed + processed,
                failed=workers.c.failed + failed,
            )
            .returning(workers.c.id)
            .cte("seen")
        )
        renewed = (
            update(tasks)
            .where(
                tuple_(tasks.c.id, tasks.c.attempts).in_(list(owned)),
                tasks.c.status == TaskStatus.IN_PROGRESS.value,
            )
            .values(lease_expires_at=func.now() + timedelta(seconds=lease_s))
            .returning(tasks.c.id)
            .cte("renewed")
        )
        statement = select(renewed.c.id).add_cte(seen)
        with translate_unavailable():
            return set((await self._conn.execute(statement)).scalars().all())

    async def stopped(self, worker_id: str, *, processed: int, failed: int) -> None:
        statement = (
            update(workers)
            .where(workers.c.id == worker_id)
            .values(
                last_seen_at=func.now(),
                stopped_at=func.now(),
                processed=workers.c.processed + processed,
                failed=workers.c.failed + failed,
            )
        )
        with translate_unavailable():
            await self._conn.execute(statement)

    async def listing(self) -> list[WorkerRecord]:
        """Workers seen within LISTED_FOR, newest first, each with the tasks it runs."""
        recent = (
            select(workers, func.now().label("now"))
            .where(workers.c.last_seen_at > func.now() - bindparam("listed", type_=Interval()))
            .order_by(workers.c.started_at.desc(), workers.c.id)
        )
        with translate_unavailable():
            rows = (await self._conn.execute(recent, {"listed": LISTED_FOR})).mappings().all()
            running = await self._running([row["id"] for row in rows])
        return [_record(row, running[row["id"]]) for row in rows]

    async def _running(self, worker_ids: list[str]) -> dict[str, list[uuid.UUID]]:
        found: dict[str, list[uuid.UUID]] = defaultdict(list)
        if not worker_ids:
            return found
        statement = (
            select(tasks.c.worker_id, tasks.c.id)
            .where(
                tasks.c.status == TaskStatus.IN_PROGRESS.value,
                tasks.c.worker_id.in_(worker_ids),
            )
            .order_by(tasks.c.started_at)
        )
        for worker_id, task_id in (await self._conn.execute(statement)).all():
            found[worker_id].append(task_id)
        return found


def _record(row: RowMapping, running: list[uuid.UUID]) -> WorkerRecord:
    values = dict(row)
    now: datetime = values.pop("now")
    state = worker_state(
        stopped_at=row["stopped_at"],
        last_seen_at=row["last_seen_at"],
        heartbeat_s=row["heartbeat_seconds"],
        now=now,
    )
    return WorkerRecord(**values, state=state, running=running)
