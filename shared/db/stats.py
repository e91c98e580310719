"""Statistics: exact counts from the counters the transitions keep, and time windows read
from recent history, both fast at millions of tasks."""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Interval, Select, Uuid, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.engine import translate_unavailable
from shared.db.tables import task_counts, task_events, tasks
from shared.db.write_path import OWNED
from shared.domain.enums import TaskPriority, TaskStatus

# The windows the throughput is reported over, and the one durations are taken from.
WINDOWS_MIN = (1, 5, 15)
FINISHED = (TaskStatus.COMPLETED.value, TaskStatus.FAILED.value)


@dataclass(frozen=True)
class Counts:
    by_status: dict[TaskStatus, int]
    by_priority: dict[TaskPriority, int]

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


@dataclass(frozen=True)
class Window:
    """What finished in the last minutes: throughput per window, durations and waits."""

    per_minute: dict[int, dict[TaskStatus, float]]  # window (min) -> status -> per minute
    duration_p50_s: float | None
    duration_p95_s: float | None
    duration_max_s: float | None
    wait_p50_s: float | None
    wait_p95_s: float | None


_COUNTS = (
    select(task_counts.c.status, task_counts.c.priority, func.sum(task_counts.c.n))
    .where(
        or_(
            bindparam("owner", type_=Uuid()).is_(None),
            task_counts.c.owner_id == bindparam("owner", type_=Uuid()),
        )
    )
    .group_by(task_counts.c.status, task_counts.c.priority)
)


def _window_statement() -> Select[*tuple[Any, ...]]:
    """One pass over the finish events of the longest window, joined to their tasks."""
    recent = task_events.c.at > func.now() - bindparam("longest", type_=Interval())
    finished = task_events.c.to_status.in_(FINISHED)
    duration = func.extract("epoch", tasks.c.completed_at - tasks.c.started_at)
    wait = func.extract("epoch", tasks.c.started_at - tasks.c.created_at)
    columns = [
        func.count()
        .filter(
            task_events.c.to_status == status,
            task_events.c.at > func.now() - timedelta(minutes=minutes),
        )
        .label(f"{status}_{minutes}")
        for minutes in WINDOWS_MIN
        for status in FINISHED
    ]
    return (
        select(
            *columns,
            func.percentile_cont(0.5).within_group(duration).label("duration_p50"),
            func.percentile_cont(0.95).within_group(duration).label("duration_p95"),
            func.max(duration).label("duration_max"),
            func.percentile_cont(0.5).within_group(wait).label("wait_p50"),
            func.percentile_cont(0.95).within_group(wait).label("wait_p95"),
        )
        .select_from(task_events.join(tasks, tasks.c.id == task_events.c.task_id))
        .where(recent, finished, OWNED)
    )


_WINDOW = _window_statement()


@dataclass(frozen=True)
class Minute:
    """What finished in one minute: how many, and how long they ran."""

    start: datetime
    completed: int
    failed: int
    duration_p50_s: float | None
    duration_p95_s: float | None


def _timeline_statement() -> Select[*tuple[Any, ...]]:
    minute = func.date_trunc("minute", task_events.c.at).label("minute")
    duration = func.extract("epoch", tasks.c.completed_at - tasks.c.started_at)
    first = func.date_trunc("minute", func.now()) - bindparam("span", type_=Interval())
    return (
        select(
            minute,
            func.count().filter(task_events.c.to_status == TaskStatus.COMPLETED.value),
            func.count().filter(task_events.c.to_status == TaskStatus.FAILED.value),
            func.percentile_cont(0.5).within_group(duration),
            func.percentile_cont(0.95).within_group(duration),
        )
        .select_from(task_events.join(tasks, tasks.c.id == task_events.c.task_id))
        .where(task_events.c.at >= first, task_events.c.to_status.in_(FINISHED), OWNED)
        .group_by(minute)
    )


_TIMELINE = _timeline_statement()


class StatsRepository:
    def __init__(self, conn: AsyncConnection, *, owner: uuid.UUID | None = None) -> None:
        """`owner`: count only that user's tasks (a member's scope); None counts all."""
        self._conn = conn
        self._owner = owner

    async def counts(self) -> Counts:
        by_status = dict.fromkeys(TaskStatus, 0)
        by_priority = dict.fromkeys(TaskPriority, 0)
        with translate_unavailable():
            rows = (await self._conn.execute(_COUNTS, {"owner": self._owner})).all()
        for status, priority, n in rows:
            by_status[TaskStatus(status)] += int(n)
            by_priority[TaskPriority(priority)] += int(n)
        return Counts(by_status=by_status, by_priority=by_priority)

    async def window(self) -> Window:
        longest = timedelta(minutes=max(WINDOWS_MIN))
        with translate_unavailable():
            values = {"longest": longest, "owner": self._owner}
            row = (await self._conn.execute(_WINDOW, values)).mappings().one()
        per_minute = {
            minutes: {
                TaskStatus(status): row[f"{status}_{minutes}"] / minutes for status in FINISHED
            }
            for minutes in WINDOWS_MIN
        }
        return Window(
            per_minute=per_minute,
            duration_p50_s=_seconds(row["duration_p50"]),
            duration_p95_s=_seconds(row["duration_p95"]),
            duration_max_s=_seconds(row["duration_max"]),
            wait_p50_s=_seconds(row["wait_p50"]),
            wait_p95_s=_seconds(row["wait_p95"]),
        )

    async def timeline(self, *, minutes: int) -> list[Minute]:
        """The last `minutes` minutes (the current one included), oldest first, each one
        there even when nothing finished in it."""
        values = {"span": timedelta(minutes=minutes - 1), "owner": self._owner}
        with translate_unavailable():
            rows = (await self._conn.execute(_TIMELINE, values)).all()
            now = (await self._conn.execute(select(func.now()))).scalar_one()
        found = {row[0]: row for row in rows}
        current = now.replace(second=0, microsecond=0)
        starts = [current - timedelta(minutes=back) for back in range(minutes - 1, -1, -1)]
        return [_minute(start, found.get(start)) for start in starts]


def _minute(start: datetime, row: Any) -> Minute:
    if row is None:
        return Minute(start, 0, 0, None, None)
    return Minute(start, int(row[1]), int(row[2]), _seconds(row[3]), _seconds(row[4]))


def _seconds(value: object) -> float | None:
    return None if value is None else float(str(value))
