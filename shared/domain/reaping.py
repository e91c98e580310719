"""What becomes of a task whose worker died (its lease ran out): a pure policy."""

from shared.domain import transitions as t
from shared.domain.records import TaskRecord

# The error a task gets when its workers kept dying on it.
WORKER_LOST = "worker lost"


def verdict(task: TaskRecord, max_deliveries: int) -> t.Transition:
    """CANCELLED if cancellation was asked, FAILED after `max_deliveries` deaths (a poison
    task), else back to NEW for the relay to publish again."""
    if task.cancel_requested:
        return t.CANCEL_RUNNING
    if task.lost_attempts + 1 >= max_deliveries:
        return t.FAIL
    return t.LOSE
