"""Statistics: exact counts per status and priority, throughput, durations, queue depths."""

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import PublisherDep, SettingsDep, StatsDep, WorkersDep
from api.errors import AUTH_ERRORS, ERRORS
from api.schemas import MinuteOut, Stats, Summary, Throughput, Timeline
from shared.db.stats import Counts
from shared.domain.enums import TaskStatus, WorkerState
from shared.messaging.depths import queue_depths

router = APIRouter(prefix="/api/v1", tags=["stats"], responses=AUTH_ERRORS)


def _summary(counts: Counts) -> Summary:
    return Summary(total=counts.total, by_status=counts.by_status, by_priority=counts.by_priority)


@router.get("/tasks/stats/summary", responses=ERRORS)
async def summary(stats: StatsDep) -> Summary:
    """How many of the caller's tasks (an admin: all tasks) are in each status (all six,
    zeros included) and of each priority."""
    return _summary(await stats.counts())


@router.get("/stats", responses=ERRORS)
async def full_stats(
    stats: StatsDep, workers: WorkersDep, publisher: PublisherDep, settings: SettingsDep
) -> Stats:
    """The caller's summary (an admin's: of all tasks), plus throughput over 1, 5 and 15
    minutes, durations and queue waits of the last 15 minutes, queue depths from the broker
    (null if it is away), workers online. Queue depths and workers are the whole service's."""
    counts, window = await stats.counts(), await stats.window()
    depths = await queue_depths(publisher, settings)
    online = [w for w in await workers.listing() if w.state is WorkerState.ONLINE]
    return Stats(
        **_summary(counts).model_dump(),
        throughput={
            f"{minutes}m": Throughput(
                completed_per_minute=rates[TaskStatus.COMPLETED],
                failed_per_minute=rates[TaskStatus.FAILED],
            )
            for minutes, rates in window.per_minute.items()
        },
        duration_p50_seconds=window.duration_p50_s,
        duration_p95_seconds=window.duration_p95_s,
        duration_max_seconds=window.duration_max_s,
        queue_wait_p50_seconds=window.wait_p50_s,
        queue_wait_p95_seconds=window.wait_p95_s,
        queue_ready=depths.ready,
        queue_unacknowledged=depths.unacknowledged,
        dead_letters=depths.dead_letters,
        workers_online=len(online),
    )


@router.get("/stats/timeline", responses=ERRORS)
async def timeline(
    stats: StatsDep, minutes: Annotated[int, Query(ge=1, le=24 * 60)] = 60
) -> Timeline:
    """Per minute over the last `minutes` (the caller's tasks; an admin's: all): how many
    COMPLETED and FAILED, and their durations' p50 and p95. Minutes without any are zeros."""
    return Timeline(
        minutes=[
            MinuteOut(
                start=minute.start,
                completed=minute.completed,
                failed=minute.failed,
                duration_p50_seconds=minute.duration_p50_s,
                duration_p95_seconds=minute.duration_p95_s,
            )
            for minute in await stats.timeline(minutes=minutes)
        ]
    )
