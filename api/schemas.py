"""The API's request and response bodies."""

import uuid
from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.enums import TaskPriority, TaskStatus
from shared.kinds import DEFAULT_KIND, KIND_PARAMS, parse_params
from shared.models import TaskRecord
from shared.tables import DESCRIPTION_MAX_CHARS, KIND_MAX_CHARS, MAX_RETRIES, TITLE_MAX_CHARS

# The schema's own ceiling; the running service also enforces its settings' lower one.
MAX_TIMEOUT_SECONDS = 86_400


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
    # strict: JSON `true` is not a number of retries.
    max_retries: int = Field(
        0, ge=0, le=MAX_RETRIES, strict=True, description="Retries after failed attempts"
    )
    timeout_seconds: int | None = Field(
        None,
        ge=1,
        strict=True,
        le=MAX_TIMEOUT_SECONDS,
        description="Time limit of one attempt; default TASK_TIMEOUT_SECONDS. Must stay below "
        "the broker's ack timeout (BROKER_CONSUMER_TIMEOUT_SECONDS - 120)",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_nul_characters(cls, data: Any) -> Any:
        # PostgreSQL text and JSONB cannot hold U+0000: refuse it here as a 422, anywhere in
        # the body, rather than let the INSERT fail with a 500.
        if _contains_nul(data):
            raise ValueError("text must not contain the NUL character (\\u0000)")
        return data

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


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    return False


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
    max_retries: int
    timeout_seconds: int
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
    total: int = Field(description="Matching tasks: exact up to 1,000, then an estimate")
    total_is_exact: bool
    limit: int
    offset: int
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end"
    )


class ErrorOut(BaseModel):
    detail: Any = Field(description="What went wrong: a message, or a list of validation errors")
