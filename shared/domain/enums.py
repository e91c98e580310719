"""The vocabularies every part of the service shares: task status and priority, worker state."""

from enum import StrEnum


class TaskStatus(StrEnum):
    """Where a task is in its life. Allowed moves live in `shared.transitions`."""

    NEW = "NEW"  # stored by the API; the broker has not confirmed its message yet
    PENDING = "PENDING"  # the broker confirmed the message; waiting for a worker
    IN_PROGRESS = "IN_PROGRESS"  # a worker claimed it and runs its handler
    COMPLETED = "COMPLETED"  # the handler returned; `result` holds what it returned
    FAILED = "FAILED"  # the handler raised; `error` says what went wrong
    CANCELLED = "CANCELLED"  # cancelled through the API, before or while running

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class TaskPriority(StrEnum):
    """How urgent a task is; higher priorities leave the queue first."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"

    @property
    def broker_priority(self) -> int:
        """The AMQP message priority; spaced out so levels can be added without a new queue."""
        return _BROKER_PRIORITY[self]


# Must stay within `shared.messaging.topology.MAX_PRIORITY` (the queue's x-max-priority).
_BROKER_PRIORITY = {TaskPriority.LOW: 1, TaskPriority.MEDIUM: 5, TaskPriority.HIGH: 9}


class WorkerState(StrEnum):
    """Whether a worker process is alive, as its heartbeats tell."""

    ONLINE = "online"  # seen within its last three heartbeat periods
    OFFLINE = "offline"  # not seen for three heartbeat periods: it died or is cut off
    STOPPED = "stopped"  # it shut down gracefully


class Role(StrEnum):
    """What a user may do."""

    ADMIN = "admin"  # sees and acts on every task; manages users and workers
    MEMBER = "member"  # sees and acts on their own tasks only
