"""When a worker counts as online, offline or stopped: a pure policy, tested without services."""

from datetime import datetime, timedelta

from shared.domain.enums import WorkerState

# A worker unseen for this many of its heartbeat periods is offline: one late beat is
# noise (a slow database, a busy machine), three are a dead or cut-off worker.
MISSED_BEATS_OFFLINE = 3


def worker_state(
    *, stopped_at: datetime | None, last_seen_at: datetime, heartbeat_s: float, now: datetime
) -> WorkerState:
    if stopped_at is not None:
        return WorkerState.STOPPED
    if now - last_seen_at > timedelta(seconds=heartbeat_s * MISSED_BEATS_OFFLINE):
        return WorkerState.OFFLINE
    return WorkerState.ONLINE
