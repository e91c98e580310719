"""All SQL of the service. Every status change is one guarded UPDATE ... RETURNING."""

import uuid
from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Interval,
    Text,
    Update,
    bindparam,
    case,
    func,
    literal,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from shared import transitions as t
from shared.db import translate_unavailable
from shared.enums import TaskPriority, TaskStatus
from shared.errors import TaskAlreadyFinished, TaskNotFound
from shared.models import TaskPage, TaskRecord
from shared.tables import tasks


def _values(statuses: Iterable[TaskStatus]) -> list[str]:
    return sorted(status.value for status in statuses)


def _guarded(transition: t.Transition, *conditions: ColumnElement[bool], **values: Any) -> Update:
    """The one statement a transition is: UPDATE ... WHERE status IN (sources) RETURNING."""
    return (
        update(tasks)
        .where(
            tasks.c.id == bindparam("task_id"),
            tasks.c.status.in_(_values(transition.sources)),
            *conditions,
        )
        .values(status=transition.target.value, updated_at=func.now(), **values)
        .returning(*tasks.c)
    )


# The hot statements are built once, with bind parameters: building a Core statement costs
# more CPU than sending it (the worker's profile: 40 % of a claim), executing one does not.
_LEASE_END = func.now() + bindparam("lease", type_=Interval())
_FENCED = tasks.c.attempts == bindparam("attempt")
_INSERT = tasks.insert().returning(*tasks.c)
_GET = select(tasks).where(tasks.c.id == bindparam("task_id"))
_PUBLISH = _guarded(t.PUBLISH)
_CLAIM = _guarded(
    t.CLAIM,
    ~tasks.c.cancel_requested,
    started_at=func.now(),
    attempts=tasks.c.attempts + 1,
    lease_expires_at=_LEASE_END,
)
_FINISH = {
    transition: _guarded(
        transition,
        _FENCED,
        completed_at=func.now(),
        result=bindparam("result", type_=JSONB(none_as_null=True)),
        error=bindparam("error", type_=Text()),
        lease_expires_at=None,
    )
    for transition in (t.COMPLETE, t.FAIL, t.CANCEL_RUNNING)
}
_RETRY = _guarded(t.RETRY, _FENCED, error=bindparam("error", type_=Text()), lease_expires_at=None)
_RELEASE = _guarded(t.RELEASE, _FENCED, started_at=None, lease_expires_at=None)


# Up to this many matching rows the list's total is exact; beyond it, an estimate.
EXACT_COUNT_LIMIT = 1_000

# Where a page starts in keyset pagination: the (created_at, id) of the task before it.
PagePosition = tuple[datetime, uuid.UUID]


class TaskRepository:
    """Reads and writes tasks on the connection it is given; the caller owns transactions."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def create(
        self,
        *,
        title: str,
        description: str,
        priority: TaskPriority,
        kind: str,
        params: dict[str, Any],
        max_retries: int = 0,
        timeout_seconds: int,
    ) -> TaskRecord:
        values = {
            "title": title,
            "description": description,
            "priority": priority.value,
            "status": TaskStatus.NEW.value,
            "kind": kind,
            "params": params,
            "max_retries": max_retries,
            "timeout_seconds": timeout_seconds,
        }
        record = await self._one_or_none(_INSERT, values)
        assert record is not None, "INSERT ... RETURNING returns the row"
        return record

    async def get(self, task_id: uuid.UUID) -> TaskRecord:
        record = await self._one_or_none(_GET, {"task_id": task_id})
        if record is None:
            raise TaskNotFound(f"task {task_id} not found")
        return record

    async def list_page(
        self,
        *,
        statuses: Collection[TaskStatus] = (),
        priorities: Collection[TaskPriority] = (),
        limit: int,
        offset: int = 0,
        after: PagePosition | None = None,
    ) -> TaskPage:
        """Newest first, ties broken by id, so pages are stable while tasks keep arriving.

        `after` (keyset pagination) starts right after a task, at any depth as fast as the
        first page; `offset` has to walk past every row it skips.
        """
        where: list[ColumnElement[bool]] = []
        if statuses:
            where.append(tasks.c.status.in_([s.value for s in statuses]))
        if priorities:
            where.append(tasks.c.priority.in_([p.value for p in priorities]))
        position = []
        if after is not None:
            position.append(tuple_(tasks.c.created_at, tasks.c.id) < tuple_(*after))
        page = (
            select(tasks)
            .where(*where, *position)
            .order_by(tasks.c.created_at.desc(), tasks.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        items = await self._many(page)
        total, exact = await self._count(where)
        return TaskPage(items=items, total=total, total_is_exact=exact)

    async def _count(self, where: list[ColumnElement[bool]]) -> tuple[int, bool]:
        """Exact up to EXACT_COUNT_LIMIT rows, the planner's estimate beyond: an exact count
        of a million rows takes longer than the page it comes with."""
        matching = select(literal(1)).select_from(tasks).where(*where)
        capped = select(func.count()).select_from(matching.limit(EXACT_COUNT_LIMIT + 1).subquery())
        with translate_unavailable():
            counted = int((await self._conn.execute(capped)).scalar_one())
            if counted <= EXACT_COUNT_LIMIT:
                return counted, True
            # Filters are enum values the API validated, so literal binds are safe here.
            sql = matching.compile(
                dialect=self._conn.dialect, compile_kwargs={"literal_binds": True}
            )
            plan = (await self._conn.execute(text(f"EXPLAIN (FORMAT JSON) {sql}"))).scalar_one()
        return max(counted, int(plan[0]["Plan"]["Plan Rows"])), False

    async def count_new(self) -> int:
        """How many tasks wait for the relay (served by the partial index on NEW)."""
        statement = (
            select(func.count()).select_from(tasks).where(tasks.c.status == TaskStatus.NEW.value)
        )
        with translate_unavailable():
            return int((await self._conn.execute(statement)).scalar_one())

    async def mark_published(self, task_id: uuid.UUID) -> TaskRecord | None:
        return await self._one_or_none(_PUBLISH, {"task_id": task_id})

    async def claim(self, task_id: uuid.UUID, *, lease_s: float) -> TaskRecord | None:
        """Start an attempt, unless the task was cancelled, finished, or is running elsewhere."""
        lease = timedelta(seconds=lease_s)
        return await self._one_or_none(_CLAIM, {"task_id": task_id, "lease": lease})

    async def renew_leases(
        self, owned: Collection[tuple[uuid.UUID, int]], *, lease_s: float
    ) -> set[uuid.UUID]:
        """Extend the leases of these (task, attempt) pairs; returns the ones still owned."""
        if not owned:
            return set()
        statement = (
            update(tasks)
            .where(
                tuple_(tasks.c.id, tasks.c.attempts).in_(list(owned)),
                tasks.c.status == TaskStatus.IN_PROGRESS.value,
            )
            .values(lease_expires_at=_from_now(lease_s))
            .returning(tasks.c.id)
        )
        with translate_unavailable():
            return set((await self._conn.execute(statement)).scalars().all())

    async def expired_leases(self, *, limit: int) -> list[TaskRecord]:
        """Running tasks whose worker stopped renewing their lease: it died."""
        statement = (
            select(tasks)
            .where(
                tasks.c.status == TaskStatus.IN_PROGRESS.value,
                tasks.c.lease_expires_at < func.now(),
            )
            .limit(limit)
        )
        return await self._many(statement)

    async def unpublished(self, *, older_than_s: float, limit: int) -> list[TaskRecord]:
        """NEW tasks to publish, locked so other relays skip them; call inside a transaction.

        `older_than_s` leaves the create path time to publish its own task first.
        """
        statement = (
            select(tasks)
            .where(
                tasks.c.status == TaskStatus.NEW.value,
                tasks.c.updated_at < _from_now(-older_than_s),
            )
            .order_by(tasks.c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return await self._many(statement)

    async def finish(
        self,
        task_id: uuid.UUID,
        *,
        transition: t.Transition,
        attempt: int,
        result: Any = None,
        error: str | None = None,
    ) -> TaskRecord | None:
        """Record an attempt's outcome; fenced on the attempt so a stale one changes nothing."""
        values = {"task_id": task_id, "attempt": attempt, "result": result, "error": error}
        return await self._one_or_none(_FINISH[transition], values)

    async def retry(self, task_id: uuid.UUID, *, attempt: int, error: str) -> TaskRecord | None:
        """The attempt failed with retries left: back to PENDING, keeping its error."""
        values = {"task_id": task_id, "attempt": attempt, "error": error}
        return await self._one_or_none(_RETRY, values)

    async def release(self, task_id: uuid.UUID, *, attempt: int) -> TaskRecord | None:
        """Hand an interrupted attempt back to the queue (worker shutdown)."""
        return await self._one_or_none(_RELEASE, {"task_id": task_id, "attempt": attempt})

    async def reap(
        self, task: TaskRecord, *, transition: t.Transition, error: str | None = None
    ) -> TaskRecord | None:
        """Settle a task whose lease expired, unless its worker renewed it meanwhile."""
        values: dict[str, Any] = {
            "lease_expires_at": None,
            "lost_attempts": tasks.c.lost_attempts + 1,
        }
        if transition.target.is_terminal:
            values.update(completed_at=func.now(), error=error)
        return await self._apply(
            transition,
            task.id,
            tasks.c.attempts == task.attempts,
            tasks.c.lease_expires_at < func.now(),
            **values,
        )

    async def cancel(self, task_id: uuid.UUID) -> TaskRecord:
        """Cancel a queued task at once, or flag a running one for its worker to stop.

        One statement decides both, so a claim racing with it either sees the flag or has
        already started the task (which then gets the flag).
        """
        queued = tasks.c.status.in_(_values(t.CANCEL_QUEUED.sources))
        statement = (
            update(tasks)
            .where(
                tasks.c.id == task_id,
                tasks.c.status.in_(_values(t.CANCEL_QUEUED.sources | t.CANCEL_RUNNING.sources)),
            )
            .values(
                cancel_requested=True,
                status=case((queued, t.CANCEL_QUEUED.target.value), else_=tasks.c.status),
                completed_at=case((queued, func.now()), else_=tasks.c.completed_at),
                updated_at=func.now(),
            )
            .returning(*tasks.c)
        )
        record = await self._one_or_none(statement)
        if record is not None:
            return record
        current = await self.get(task_id)
        if current.status is TaskStatus.CANCELLED:
            return current
        raise TaskAlreadyFinished(f"task {task_id} is already {current.status.value}")

    async def cancel_requested_among(self, task_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these running tasks the API has asked to cancel."""
        ids = list(task_ids)
        if not ids:
            return set()
        statement = select(tasks.c.id).where(tasks.c.id.in_(ids), tasks.c.cancel_requested)
        with translate_unavailable():
            return set((await self._conn.execute(statement)).scalars().all())

    async def _apply(
        self,
        transition: t.Transition,
        task_id: uuid.UUID,
        *conditions: ColumnElement[bool],
        **values: Any,
    ) -> TaskRecord | None:
        """One guarded UPDATE; None when the task is not in a state the transition allows."""
        statement = (
            update(tasks)
            .where(
                tasks.c.id == task_id,
                tasks.c.status.in_(_values(transition.sources)),
                *conditions,
            )
            .values(status=transition.target.value, updated_at=func.now(), **values)
            .returning(*tasks.c)
        )
        return await self._one_or_none(statement)

    async def _many(self, statement: Any) -> list[TaskRecord]:
        with translate_unavailable():
            rows = (await self._conn.execute(statement)).mappings().all()
        return [TaskRecord.from_row(row) for row in rows]

    async def _one_or_none(
        self, statement: Any, values: dict[str, Any] | None = None
    ) -> TaskRecord | None:
        with translate_unavailable():
            row = (await self._conn.execute(statement, values)).mappings().one_or_none()
        return None if row is None else TaskRecord.from_row(row)


def _from_now(seconds: float) -> ColumnElement[Any]:
    return func.now() + timedelta(seconds=seconds)
