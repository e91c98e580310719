"""The task state machine: every allowed status change, in one place.

Each transition becomes one guarded `UPDATE ... WHERE status IN (sources) RETURNING` that
also writes the task's history row (`shared.db.write_path`), so two writers can never move
a task backwards or finish it twice, and no change goes unrecorded.
"""

from dataclasses import dataclass

from shared.domain.enums import TaskStatus

S = TaskStatus


@dataclass(frozen=True)
class Transition:
    name: str
    sources: frozenset[TaskStatus]
    target: TaskStatus | None  # None: the status stays what it is (an edit)
    # What the history row says when the caller gives no reason of its own.
    reason: str | None = None

    def allows(self, status: TaskStatus) -> bool:
        return status in self.sources


# API or relay: the broker confirmed the message. A worker may already have moved it on.
PUBLISH = Transition("publish", frozenset({S.NEW}), S.PENDING)
# Worker: start an attempt. NEW is allowed because the message can outrun PUBLISH.
CLAIM = Transition("claim", frozenset({S.NEW, S.PENDING}), S.IN_PROGRESS)
# Worker: the handler returned.
COMPLETE = Transition("complete", frozenset({S.IN_PROGRESS}), S.COMPLETED)
# Worker: the handler raised or timed out with no retries left; reaper: a poison task.
FAIL = Transition("fail", frozenset({S.IN_PROGRESS}), S.FAILED, "handler raised")
# Worker: the attempt failed and retries are left; the message waits in a delay queue.
RETRY = Transition("retry", frozenset({S.IN_PROGRESS}), S.PENDING, "retry")
# API: cancel a task no worker has started; the flag also stops a claim racing with it.
CANCEL_QUEUED = Transition(
    "cancel_queued", frozenset({S.NEW, S.PENDING}), S.CANCELLED, "cancelled by request"
)
# API: ask the worker running a task to stop it; the status changes once it has.
REQUEST_CANCEL = Transition(
    "request_cancel", frozenset({S.IN_PROGRESS}), S.IN_PROGRESS, "cancel requested"
)
# Worker: the handler stopped because cancellation was asked while it ran; reaper likewise.
CANCEL_RUNNING = Transition(
    "cancel_running", frozenset({S.IN_PROGRESS}), S.CANCELLED, "cancelled by request"
)
# Worker: shutdown interrupted the handler; the task goes back to the queue.
RELEASE = Transition("release", frozenset({S.IN_PROGRESS}), S.PENDING, "handed back at shutdown")
# Reaper: the lease ran out, so the worker died; NEW makes the relay publish it again.
LOSE = Transition("lose", frozenset({S.IN_PROGRESS}), S.NEW, "lease expired")
# API: a new priority for a queued task. Its message in the queue cannot change, so the
# task gets a new dispatch (generation + 1, NEW: published again at the new priority) and
# the old message goes stale: the claim refuses any dispatch but the current one.
REPRIORITIZE = Transition("reprioritize", frozenset({S.NEW, S.PENDING}), S.NEW)
# API: run a finished task again (Flower's retry): a new dispatch, attempts go on counting.
RERUN = Transition("rerun", frozenset({S.FAILED, S.CANCELLED}), S.NEW)
# API: a new title or description; the status stays as it is.
EDIT = Transition("edit", frozenset({S.NEW, S.PENDING, S.IN_PROGRESS}), None, "edited")

ALL = (
    PUBLISH,
    CLAIM,
    COMPLETE,
    FAIL,
    RETRY,
    CANCEL_QUEUED,
    REQUEST_CANCEL,
    CANCEL_RUNNING,
    RELEASE,
    LOSE,
    REPRIORITIZE,
    RERUN,
    EDIT,
)

# What the history row of a task's creation says.
CREATED_REASON = "created"
