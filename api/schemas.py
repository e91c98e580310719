"""The API's request and response bodies."""

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.db.tables import (
    DESCRIPTION_MAX_CHARS,
    DESCRIPTION_SHORT_MAX_CHARS,
    KEY_NAME_MAX_CHARS,
    KIND_MAX_CHARS,
    MAX_RETRIES,
    TITLE_MAX_CHARS,
    URL_MAX_CHARS,
    USER_NAME_MAX_CHARS,
)
from shared.domain.enums import Role, TaskPriority, TaskStatus, WorkerState
from shared.domain.kinds import DEFAULT_KIND, KIND_PARAMS, parse_params
from shared.domain.notifications import DeliveryStatus
from shared.domain.outcomes import contains_nul
from shared.domain.records import ApiKeyRecord, DeliveryRecord, TaskRecord

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
        if contains_nul(data):
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


class TaskUpdate(BaseModel):
    """What may change after creation; anything else (status, kind, params) is refused."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"priority": "HIGH"}, {"title": "New"}]}
    )

    title: str | None = Field(None, min_length=1, max_length=TITLE_MAX_CHARS)
    description: str | None = Field(None, max_length=DESCRIPTION_MAX_CHARS)
    priority: TaskPriority | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_nul_characters(cls, data: Any) -> Any:
        if contains_nul(data):
            raise ValueError("text must not contain the NUL character (\\u0000)")
        return data

    @model_validator(mode="after")
    def _changes_something(self) -> Self:
        if self.title is None and self.description is None and self.priority is None:
            raise ValueError("give at least one of title, description, priority")
        return self


class TaskRetry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    priority: TaskPriority | None = Field(None, description="Run it again at this priority")


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    owner_id: uuid.UUID
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


class TaskEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    from_status: TaskStatus | None = Field(description="null for the task's creation")
    to_status: TaskStatus
    attempt: int
    worker_id: str | None = Field(description="null when the API made the change")
    user_id: uuid.UUID | None = Field(description="whose API request made the change")
    reason: str | None


class TaskEventList(BaseModel):
    items: list[TaskEventOut]


class WorkerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    hostname: str
    pid: int
    state: WorkerState
    started_at: datetime
    last_seen_at: datetime
    stopped_at: datetime | None
    prefetch: int
    running: list[uuid.UUID] = Field(description="Tasks it runs now")
    processed: int = Field(description="Attempts it finished, failed ones included")
    failed: int = Field(description="Attempts that failed")


class WorkerList(BaseModel):
    items: list[WorkerOut]


class Summary(BaseModel):
    total: int
    by_status: dict[TaskStatus, int] = Field(description="Every status, zeros included")
    by_priority: dict[TaskPriority, int]


class Throughput(BaseModel):
    """Tasks finished per minute, averaged over the window."""

    completed_per_minute: float
    failed_per_minute: float


class Stats(Summary):
    throughput: dict[str, Throughput] = Field(description="Keyed by window: 1m, 5m, 15m")
    duration_p50_seconds: float | None = Field(
        description="Of tasks that COMPLETED or FAILED in the last 15 minutes: completed - started"
    )
    duration_p95_seconds: float | None
    duration_max_seconds: float | None
    queue_wait_p50_seconds: float | None = Field(description="Of the same tasks: started - created")
    queue_wait_p95_seconds: float | None
    queue_ready: int | None = Field(
        description="Ready messages in the task queue; null: broker away"
    )
    queue_unacknowledged: int | None = Field(
        description="Delivered, not yet acknowledged; null without BROKER_MANAGEMENT_URL"
    )
    dead_letters: int | None = Field(description="Messages in the dead-letter queue")
    workers_online: int


class MinuteOut(BaseModel):
    start: datetime = Field(description="The minute's first instant")
    completed: int
    failed: int
    duration_p50_seconds: float | None = Field(description="Of the tasks that finished in it")
    duration_p95_seconds: float | None


class Timeline(BaseModel):
    minutes: list[MinuteOut] = Field(description="Oldest first, the current minute last")


class ApiHealth(BaseModel):
    status: str
    version: str
    time: datetime = Field(description="The server's clock, UTC")


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=USER_NAME_MAX_CHARS, pattern=r"^[^\x00]*$")
    email: EmailStr | None = None
    role: Role = Role.MEMBER


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr | None = None
    role: Role | None = None
    disabled: bool | None = Field(None, description="true disables the user (and all its keys)")


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    email: str | None
    role: Role
    created_at: datetime
    disabled_at: datetime | None
    notify_email: list[TaskStatus] = Field(
        description="Statuses of their tasks this user is e-mailed about"
    )


class MePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    notify_email: list[TaskStatus] = Field(
        max_length=len(TaskStatus),
        description="E-mail me when my tasks reach these statuses (empty: never); "
        "needs an email address on the user",
    )


class UserList(BaseModel):
    items: list[UserOut]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=KEY_NAME_MAX_CHARS, pattern=r"^[^\x00]*$")
    # strict: a number is not a date.
    expires_at: AwareDatetime | None = Field(
        None, strict=True, description="Optional, in the future, with a time zone"
    )

    @field_validator("expires_at")
    @classmethod
    def _in_the_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= datetime.now(UTC):
            raise ValueError("expires_at must be in the future")
        return value


class KeyOut(BaseModel):
    """A key as listed: its first characters, never the key itself."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="The key itself: shown this once, stored only as a digest")

    @classmethod
    def of(cls, record: ApiKeyRecord, key: str) -> "KeyCreated":
        return cls.model_validate({**dataclasses.asdict(record), "key": key})


class KeyList(BaseModel):
    items: list[KeyOut]


class UserCreated(BaseModel):
    user: UserOut
    key: KeyCreated = Field(description="The user's first API key, shown this once")


def _url_fits(url: HttpUrl) -> HttpUrl:
    if len(str(url)) > URL_MAX_CHARS:
        raise ValueError(f"at most {URL_MAX_CHARS} characters")
    return url


# http or https only (HttpUrl), and short enough to store.
WebhookUrl = Annotated[HttpUrl, AfterValidator(_url_fits)]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"url": "https://example.com/hooks/taskq", "events": ["COMPLETED"]}]
        },
    )

    url: WebhookUrl = Field(description="http or https; not a private address (see README)")
    events: list[TaskStatus] = Field(
        min_length=1, max_length=len(TaskStatus), description="Statuses to notify on"
    )
    description: str = Field("", max_length=DESCRIPTION_SHORT_MAX_CHARS, pattern=r"^[^\x00]*$")


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl | None = None
    events: list[TaskStatus] | None = Field(None, min_length=1, max_length=len(TaskStatus))
    description: str | None = Field(
        None, max_length=DESCRIPTION_SHORT_MAX_CHARS, pattern=r"^[^\x00]*$"
    )
    enabled: bool | None = Field(None, description="true re-enables a disabled subscription")


class WebhookOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    owner_id: uuid.UUID
    url: str
    events: list[TaskStatus]
    description: str
    enabled: bool
    disabled_reason: str | None = Field(description="Why it stopped, if it did")
    consecutive_failures: int = Field(description="Deliveries in a row that ended failed")
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="The Standard Webhooks signing secret (`whsec_...`), shown this once"
    )


class WebhookList(BaseModel):
    items: list[WebhookOut]


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID = Field(description="Sent as `webhook-id` (`msg_` + this id's hex)")
    event_id: int = Field(description="The history row it notifies of")
    event_type: str
    task_id: uuid.UUID
    status: DeliveryStatus
    attempts: int
    last_response_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None = Field(description="null once delivered or failed")
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, record: DeliveryRecord) -> "DeliveryOut":
        out = cls.model_validate(record)
        if out.status is not DeliveryStatus.PENDING:
            out.next_attempt_at = None
        return out


class DeliveryList(BaseModel):
    items: list[DeliveryOut]
