"""The tasks aggregate: reading tasks, and every change of their status.

Each change goes through `shared.db.write_path`, which writes the history row and moves
the counters in the same statement as the guarded UPDATE.
"""

import uuid
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Integer,
    Interval,
    Select,
    String,
    Text,
    Uuid,
    any_,
    bindparam,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import driver
from shared.db.engine import translate_unavailable
from shared.db.tables import REASON_MAX_CHARS, tasks
from shared.db.write_path import (
    ACTOR,
    NEW_TASK_FIELDS,
    OWNED,
    creation,
    publication_of_many,
    transition,
)
from shared.domain import transitions as t
from shared.domain.enums import TaskPriority, TaskStatus
from shared.domain.errors import TaskAlreadyFinished, TaskNotFinished, TaskNotFound, TaskRunning
from shared.domain.records import NewTask, TaskPage, TaskRecord

# The statements are built once, with bind parameters: building a Core statement costs
# more CPU than sending it (the worker's profile: 40 % of a claim), executing one does not.
_LEASE_END = func.now() + bindparam("lease", type_=Interval())
_FENCED = tasks.c.attempts == bindparam("attempt")
_ERROR = bindparam("error", type_=Text())
_CREATE = creation()
_GET = select(tasks).where(tasks.c.id == bindparam("task_id"), OWNED)
# The notifier reads the tasks of a batch of events: one statement whatever their number.
_MANY = select(tasks).where(tasks.c.id == any_(bindparam("task_ids", type_=ARRAY(Uuid()))), OWNED)
_GENERATION = bindparam("generation", type_=Integer())
# Only the dispatch whose message was confirmed may mark the task published: an older one
# confirming late must not make a re-dispatched task PENDING without its current message.
_PUBLISH = transition(t.PUBLISH, tasks.c.dispatch_generation == _GENERATION)
_PUBLISH_MANY = publication_of_many()
_CLAIM = transition(
    t.CLAIM,
    ~tasks.c.cancel_requested,
    # A stale message (an older dispatch) starts nothing; None: a message from before
    # generations existed, which the current dispatch accepts.
    or_(_GENERATION.is_(None), tasks.c.dispatch_generation == _GENERATION),
    started_at=func.now(),
    attempts=tasks.c.attempts + 1,
    lease_expires_at=_LEASE_END,
    worker_id=ACTOR,
)
_FINISH = {
    move: transition(
        move,
        _FENCED,
        completed_at=func.now(),
        result=bindparam("result", type_=JSONB(none_as_null=True)),
        error=_ERROR,
        lease_expires_at=None,
    )
    for move in (t.COMPLETE, t.FAIL, t.CANCEL_RUNNING)
}
_RETRY = transition(t.RETRY, _FENCED, error=_ERROR, lease_expires_at=None)
_RELEASE = transition(t.RELEASE, _FENCED, started_at=None, lease_expires_at=None)
# What a terminal verdict on a dead worker's task also sets.
_SETTLED: dict[str, Any] = {"completed_at": func.now(), "error": _ERROR}
# A dead worker's task: fenced on its attempt and on the lease really having run out.
_REAP = {
    move: transition(
        move,
        _FENCED,
        tasks.c.lease_expires_at < func.now(),
        lease_expires_at=None,
        lost_attempts=tasks.c.lost_attempts + 1,
        **(_SETTLED if move is not t.LOSE else {}),
    )
    for move in (t.LOSE, t.FAIL, t.CANCEL_RUNNING)
}
# Title and description only where given (null keeps them), in any status a task can
# still be changed in; a new priority also starts a new dispatch.
_EDITED: dict[str, Any] = {
    "title": func.coalesce(bindparam("title", type_=String()), tasks.c.title),
    "description": func.coalesce(bindparam("description", type_=Text()), tasks.c.description),
}
_EDIT = transition(t.EDIT, OWNED, **_EDITED)
_REPRIORITIZE = transition(
    t.REPRIORITIZE,
    OWNED,
    priority=bindparam("priority", type_=String()),
    dispatch_generation=tasks.c.dispatch_generation + 1,
    # "priority MEDIUM → HIGH", from the row as it was and as it is.
    reason=lambda changed: (
        literal("priority ") + changed.c.from_priority + " → " + changed.c.priority
    ),
    **_EDITED,
)
# The earlier attempt's error stays on the task until the next attempt's outcome replaces
# it, and its headline goes into the history row, where it stays.
_RERUN = transition(
    t.RERUN,
    OWNED,
    priority=func.coalesce(bindparam("priority", type_=String()), tasks.c.priority),
    dispatch_generation=tasks.c.dispatch_generation + 1,
    cancel_requested=False,
    started_at=None,
    completed_at=None,
    lease_expires_at=None,
    reason=lambda changed: func.left(
        literal("retry requested; was ")
        + changed.c.from_status
        + func.coalesce(literal(": ") + func.split_part(changed.c.error, "\n", 1), ""),
        REASON_MAX_CHARS,
    ),
)
# The flag is set by both: it also stops a claim that races with the cancel.
_CANCEL = {
    t.CANCEL_QUEUED: transition(
        t.CANCEL_QUEUED, OWNED, cancel_requested=True, completed_at=func.now()
    ),
    # Once: asking again changes nothing and writes no second history row.
    t.REQUEST_CANCEL: transition(
        t.REQUEST_CANCEL, OWNED, ~tasks.c.cancel_requested, cancel_requested=True
    ),
}


# A task's normal life, statement by statement: what the bench's bare design and its Celery
# peer run too, so that the service is measured against the same database work (the API
# marks creates published many per statement, `_PUBLISH_MANY`; the yardstick one by one).
HOT_PATH = {
    "create": _CREATE,
    "publish": _PUBLISH,
    "claim": _CLAIM,
    "complete": _FINISH[t.COMPLETE],
}


# Up to this many matching rows the list's total is exact; beyond it, an estimate.
EXACT_COUNT_LIMIT = 1_000

# Where a page starts in keyset pagination: the (created_at, id) of the task before it.
PagePosition = tuple[datetime, uuid.UUID]


class TaskRepository:
    """Reads and writes tasks on the connection it is given; the caller owns transactions."""

    def __init__(
        self,
        conn: AsyncConnection,
        *,
        worker_id: str | None = None,
        owner: uuid.UUID | None = None,
        user_id: uuid.UUID | None = None,
    ) -> None:
        """`owner` limits every read and API change to that user's tasks (a member's
        scope); None reaches all (admins, workers). `worker_id` and `user_id` say who
        makes the changes, in their history rows."""
        self._conn = conn
        self._worker_id = worker_id
        self._owner = owner
        self._user_id = user_id

    async def create(self, new: NewTask) -> TaskRecord:
        values = {field: getattr(new, field) for field in NEW_TASK_FIELDS}
        values["priority"] = new.priority.value
        record = await self._move(_CREATE, **values)
        assert record is not None, "INSERT ... RETURNING returns the row"
        return record

    async def get(self, task_id: uuid.UUID) -> TaskRecord:
        """The task, if it exists within this repository's scope; else TaskNotFound."""
        record = await self._one_or_none(_GET, {"task_id": task_id, "owner": self._owner})
        if record is None:
            raise TaskNotFound(f"task {task_id} not found")
        return record

    async def many(self, task_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, TaskRecord]:
        """These tasks (those within this repository's scope), by id."""
        if not task_ids:
            return {}
        values = {"task_ids": list(task_ids), "owner": self._owner}
        rows = await driver.fetch_all(self._conn, _MANY, values)
        return {row["id"]: TaskRecord.from_row(row) for row in rows}

    async def list_page(
        self,
        *,
        statuses: Collection[TaskStatus] = (),
        priorities: Collection[TaskPriority] = (),
        owners: Collection[uuid.UUID] = (),
        title_prefix: str | None = None,
        limit: int,
        offset: int = 0,
        after: PagePosition | None = None,
        with_total: bool = True,
    ) -> TaskPage:
        """Newest first, ties broken by id, so pages are stable while tasks keep arriving.

        `after` (keyset pagination) starts right after a task, at any depth as fast as the
        first page; `offset` has to walk past every row it skips. Without `with_total` the
        count is left out (total 0): the dashboard pages by cursor and needs none.
        """
        where: list[ColumnElement[bool]] = []
        if self._owner is not None:
            where.append(tasks.c.owner_id == self._owner)
        if owners:
            where.append(tasks.c.owner_id.in_(list(owners)))
        if statuses:
            where.append(tasks.c.status.in_([s.value for s in statuses]))
        if priorities:
            where.append(tasks.c.priority.in_([p.value for p in priorities]))
        if title_prefix:
            where.append(tasks.c.title.startswith(title_prefix, autoescape=True))
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
        if not with_total:
            return TaskPage(items=items, total=0, total_is_exact=False)
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
            # Filters are enum values and UUIDs, all validated: literal binds are safe here.
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

    async def mark_published(self, task: TaskRecord) -> TaskRecord | None:
        """NEW -> PENDING, if the broker confirmed the task's current dispatch."""
        return await self._move(_PUBLISH, task_id=task.id, generation=task.dispatch_generation)

    async def mark_published_many(
        self, confirmed: Sequence[TaskRecord]
    ) -> dict[uuid.UUID, TaskRecord]:
        """NEW -> PENDING for each of these whose current dispatch the broker confirmed, in
        one statement; the tasks marked, by id (one missing: a worker moved it on first)."""
        values = {
            "task_ids": [task.id for task in confirmed],
            "generations": [task.dispatch_generation for task in confirmed],
            "actor": self._worker_id,
        }
        rows = await driver.fetch_all(self._conn, _PUBLISH_MANY, values, records_history=True)
        return {record.id: record for record in map(TaskRecord.from_row, rows)}

    async def claim(
        self, task_id: uuid.UUID, *, lease_s: float, generation: int | None = None
    ) -> TaskRecord | None:
        """Start an attempt, unless the task was cancelled, finished, is running elsewhere,
        or `generation` is not its current dispatch (a stale message)."""
        lease = timedelta(seconds=lease_s)
        return await self._move(_CLAIM, task_id=task_id, lease=lease, generation=generation)

    async def rerun(
        self, task_id: uuid.UUID, *, priority: TaskPriority | None = None
    ) -> TaskRecord:
        """FAILED or CANCELLED -> NEW, a new dispatch (optionally at a new priority)."""
        values = {"task_id": task_id, "priority": priority.value if priority else None}
        moved = await self._move(_RERUN, **values)
        if moved is not None:
            return moved
        current = await self.get(task_id)
        raise TaskNotFinished(
            f"task {task_id} is {current.status.value}; only a FAILED or "
            "CANCELLED task can be retried"
        )

    async def update(
        self,
        task_id: uuid.UUID,
        *,
        title: str | None = None,
        description: str | None = None,
        priority: TaskPriority | None = None,
    ) -> tuple[TaskRecord, bool]:
        """Change title, description and/or priority: (the task, whether it needs a new
        dispatch). A new priority re-queues a queued task (REPRIORITIZE); a running task
        keeps its priority (TaskRunning) but may be renamed; a finished one changes not."""
        values = {"task_id": task_id, "title": title, "description": description}
        while True:
            current = await self.get(task_id)
            if current.status.is_terminal:
                raise TaskAlreadyFinished(f"task {task_id} is already {current.status.value}")
            requeue = priority is not None and priority is not current.priority
            if requeue and current.status is TaskStatus.IN_PROGRESS:
                raise TaskRunning(f"task {task_id} is running; its priority cannot change")
            if requeue:
                assert priority is not None
                moved = await self._move(_REPRIORITIZE, priority=priority.value, **values)
            else:
                moved = await self._move(_EDIT, **values)
            if moved is not None:
                return moved, requeue
            # It moved on between the read and the change (claimed, finished): again.

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
        reason: str | None = None,
    ) -> TaskRecord | None:
        """Record an attempt's outcome; fenced on the attempt so a stale one changes nothing."""
        return await self._move(
            _FINISH[transition],
            reason=reason or transition.reason,
            task_id=task_id,
            attempt=attempt,
            result=result,
            error=error,
        )

    async def retry(
        self, task_id: uuid.UUID, *, attempt: int, error: str, reason: str
    ) -> TaskRecord | None:
        """The attempt failed with retries left: back to PENDING, keeping its error."""
        return await self._move(
            _RETRY, reason=reason, task_id=task_id, attempt=attempt, error=error
        )

    async def release(self, task_id: uuid.UUID, *, attempt: int) -> TaskRecord | None:
        """Hand an interrupted attempt back to the queue (worker shutdown)."""
        return await self._move(_RELEASE, task_id=task_id, attempt=attempt)

    async def reap(
        self, task: TaskRecord, *, transition: t.Transition, reason: str | None = None
    ) -> TaskRecord | None:
        """Settle a task whose lease expired, unless its worker renewed it meanwhile.

        A terminal verdict also records `reason` as the task's error.
        """
        reason = reason or transition.reason
        values: dict[str, Any] = {"task_id": task.id, "attempt": task.attempts}
        if transition is not t.LOSE:  # a terminal verdict: the reason is its error
            values["error"] = reason
        return await self._move(_REAP[transition], reason=reason, **values)

    async def cancel(self, task_id: uuid.UUID) -> TaskRecord:
        """Cancel a queued task at once, or flag a running one for its worker to stop.

        Each is one guarded statement: a claim racing with the first either sees the flag
        or has already started the task, and then the second flags it.
        """
        while True:
            for move in (t.CANCEL_QUEUED, t.REQUEST_CANCEL):
                record = await self._move(_CANCEL[move], task_id=task_id)
                if record is not None:
                    return record
            current = await self.get(task_id)
            if current.status is TaskStatus.CANCELLED or current.cancel_requested:
                return current  # cancelled, or its worker was asked already
            if current.status.is_terminal:
                raise TaskAlreadyFinished(f"task {task_id} is already {current.status.value}")
            # It moved between the two statements (a retry went back to PENDING): again.

    async def cancel_requested_among(self, task_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these running tasks the API has asked to cancel."""
        ids = list(task_ids)
        if not ids:
            return set()
        statement = select(tasks.c.id).where(tasks.c.id.in_(ids), tasks.c.cancel_requested)
        with translate_unavailable():
            return set((await self._conn.execute(statement)).scalars().all())

    async def _move(self, statement: Select[Any], **values: Any) -> TaskRecord | None:
        """Run a write-path statement as this repository's actor; None if it was refused.

        `reason` may be among the values; without it the transition's own is written.
        """
        actors = {"actor": self._worker_id, "actor_user": self._user_id, "owner": self._owner}
        row = await driver.fetch_one(
            self._conn, statement, {**actors, **values}, records_history=True
        )
        return None if row is None else TaskRecord.from_row(row)

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
