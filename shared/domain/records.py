"""What rows look like once read: the values the repositories hand to the API and worker."""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping

from shared.domain.enums import Role, TaskPriority, TaskStatus, WorkerState


@dataclass(frozen=True, slots=True)
class TaskRecord:
    id: uuid.UUID
    title: str
    description: str
    priority: TaskPriority
    status: TaskStatus
    kind: str
    params: dict[str, Any]
    result: Any
    error: str | None
    attempts: int
    cancel_requested: bool
    max_retries: int
    timeout_seconds: int
    lost_attempts: int
    lease_expires_at: datetime | None
    dispatch_generation: int
    worker_id: str | None
    owner_id: uuid.UUID
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> "TaskRecord":
        values = dict(row)
        values["priority"] = TaskPriority(values["priority"])
        values["status"] = TaskStatus(values["status"])
        return cls(**values)

    @property
    def failed_attempts(self) -> int:
        """Attempts that ran to an error, as opposed to those whose worker died."""
        return self.attempts - self.lost_attempts

    @property
    def duration_seconds(self) -> float | None:
        """How long the handler ran; None until the task has both started and finished."""
        if self.started_at is None or self.completed_at is None:
            return None
        return (self.completed_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class TaskPage:
    items: list[TaskRecord]
    total: int
    total_is_exact: bool = True


@dataclass(frozen=True, slots=True)
class NewTask:
    """What a client asks for; the service fills in the rest."""

    owner_id: uuid.UUID
    title: str
    description: str
    priority: TaskPriority
    kind: str
    params: dict[str, Any]
    max_retries: int
    timeout_seconds: int | None  # None: the service's default


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One row of a task's history: its creation, or one transition."""

    id: int
    task_id: uuid.UUID
    at: datetime
    from_status: TaskStatus | None
    to_status: TaskStatus
    attempt: int
    worker_id: str | None
    reason: str | None
    user_id: uuid.UUID | None

    @classmethod
    def from_row(cls, row: RowMapping) -> "TaskEvent":
        values = dict(row)
        values["from_status"] = values["from_status"] and TaskStatus(values["from_status"])
        values["to_status"] = TaskStatus(values["to_status"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """A history row as the event stream sends it, with its task's current summary."""

    id: int
    xact_id: int
    task_id: uuid.UUID
    at: datetime
    from_status: str | None
    to_status: str
    attempt: int
    reason: str | None
    worker_id: str | None
    owner_id: uuid.UUID
    title: str
    priority: str
    status: str
    kind: str
    created_at: datetime

    @property
    def position(self) -> tuple[int, int]:
        return (self.xact_id, self.id)


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    id: str
    hostname: str
    pid: int
    queue: str
    prefetch: int
    heartbeat_seconds: float
    started_at: datetime
    last_seen_at: datetime
    stopped_at: datetime | None
    processed: int
    failed: int
    state: WorkerState
    running: list[uuid.UUID]


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: uuid.UUID
    name: str
    email: str | None
    role: Role
    created_at: datetime
    disabled_at: datetime | None
    notify_email: list[TaskStatus]

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> "UserRecord":
        statuses = [TaskStatus(status) for status in row["notify_email"]]
        return cls(**{**dict(row), "role": Role(row["role"]), "notify_email": statuses})


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    """A subscription as stored (its salt, never a secret)."""

    id: uuid.UUID
    owner_id: uuid.UUID
    url: str
    events: list[TaskStatus]
    description: str
    secret_salt: bytes
    enabled: bool
    disabled_reason: str | None
    consecutive_failures: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> "WebhookRecord":
        return cls(**{**dict(row), "events": [TaskStatus(status) for status in row["events"]]})


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: uuid.UUID
    channel: str
    webhook_id: uuid.UUID | None
    user_id: uuid.UUID | None
    event_id: int
    task_id: uuid.UUID
    event_type: str
    payload: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: datetime
    leased_until: datetime | None
    first_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_response_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    # The payload as a fan-out encoded it to store it (`encode_payload`), on the records it
    # lined up for itself: their first attempt sends that text rather than encoding again.
    payload_json: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A key as listed: never its secret, nor its digest."""

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for: the user behind a valid key."""

    user_id: uuid.UUID
    name: str
    role: Role
    key_id: uuid.UUID

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def owner_scope(self) -> uuid.UUID | None:
        """Whose tasks this principal may reach: its own, or (None) everybody's."""
        return None if self.is_admin else self.user_id
