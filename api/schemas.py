"""The API's request and response bodies."""

import uuid
from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.enums import TaskPriority, TaskStatus
from shared.kinds import DEFAULT_KIND, KIND_PARAMS, parse_params
from shared.models import TaskRecord
from shared.tables import DESCRIPTION_MAX_CHARS, KIND_MAX_CHARS, TITLE_MAX_CHARS


class TaskCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"title": "Resize images", "priority": "HIGH", "params": {"duration": 2}},
            ]
        },
    )

    title: str = Field(min_length=1, max_length=TITLE_MAX_CHARS)
    description: str = Field("", max_length=DESCRIPTION_MAX_CHARS)
    priority: TaskPriority = TaskPriority.MEDIUM
    kind: str = Field(
        DEFAULT_KIND,
        max_length=KIND_MAX_CHARS,
        description=f"Which handler runs the task: one of {', '.join(sorted(KIND_PARAMS))}",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="The handler's input; its keys depend on `kind`"
    )

    @model_validator(mode="after")
    def _params_fit_kind(self) -> Self:
        try:
            parsed = parse_params(self.kind, self.params)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, error['loc'])) or 'params'}: {error['msg']}"
                for error in exc.errors()
            )
            raise ValueError(f"params do not fit kind {self.kind!r}: {problems}") from exc
        self.params = parsed.model_dump(exclude_none=True)
        return self


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

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
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


class TaskStatusOut(BaseModel):
    id: uuid.UUID
    status: TaskStatus
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: float | None

    @classmethod
    def of(cls, task: TaskRecord) -> "TaskStatusOut":
        return cls(
            id=task.id,
            status=task.status,
            created_at=task.created_at,
            started_at=task.started_at,
            completed_at=task.completed_at,
            duration_seconds=task.duration_seconds,
        )


class TaskList(BaseModel):
    items: list[TaskOut]
    total: int
    limit: int
    offset: int


class ErrorOut(BaseModel):
    detail: Any = Field(description="What went wrong: a message, or a list of validation errors")
