"""What a task row looks like once read: the value the repository hands to the API and worker."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping

from shared.enums import TaskPriority, TaskStatus


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
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def from_row(cls, row: RowMapping) -> "TaskRecord":
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
