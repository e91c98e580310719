"""Every setting of the API and the worker, read once from the environment."""

from functools import lru_cache
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

# Between a task's time limit and the broker's ack timeout: time to record the outcome
# and acknowledge after a timed-out attempt, and to wait out a short database outage.
ACK_TIMEOUT_MARGIN_SECONDS = 120


class Settings(BaseSettings):
    """Environment variables are the field names in upper case (`DATABASE_URL`, ...)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/tasks"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    queue_name: str = Field("tasks", min_length=1, max_length=200, pattern=r"^[\w.\-]+$")
    log_level: LogLevel = "INFO"
    # text: readable lines (local default); json: one object per line (the images' default).
    log_format: Literal["text", "json"] = "text"

    # API processes (`python -m api`, uvicorn workers): one per core to use them all.
    # Each serves /metrics for itself alone; scrape replicas of one process for exact totals.
    api_processes: int = Field(1, ge=1, le=64)
    # Database connections of each process, opened once and kept. A request holds one only
    # for the span of a statement, so a few serve many concurrent requests.
    db_pool_size: int = Field(20, ge=1, le=100)
    db_connect_timeout_seconds: float = Field(5.0, gt=0)
    # How long a request waits for a free pooled connection under load before answering 503.
    db_pool_timeout_seconds: float = Field(30.0, gt=0)
    # A publish that the broker has not confirmed by then leaves the task NEW (never a hang).
    publish_timeout_seconds: float = Field(2.0, gt=0, le=60)
    # How often a process that lost the broker tries to reach it again.
    broker_retry_seconds: float = Field(2.0, gt=0, le=60)

    # RabbitMQ's management API (e.g. http://guest:guest@127.0.0.1:15672), for the
    # unacknowledged-message count in GET /api/v1/stats; empty: that count is null.
    broker_management_url: str = ""

    # How long an API process trusts a key it has checked: revoking a key or disabling a
    # user takes effect within this time in every process.
    auth_cache_seconds: float = Field(0.5, ge=0, le=1)
    # Origins allowed to call the API from a browser (CORS), comma-separated; empty: none.
    cors_origins: Annotated[list[str], NoDecode] = []

    # Event stream (GET /api/v1/events): how often each API process reads new history when
    # no wake-up came (a wake-up normally arrives within milliseconds of a change).
    events_poll_seconds: float = Field(0.5, gt=0, le=10)
    # Events one stream may have waiting to be sent; a client that falls this far behind
    # is disconnected (it resumes with Last-Event-ID) instead of growing the server's memory.
    stream_buffer_events: int = Field(1000, ge=10, le=100_000)
    # Keep-alive comment on an idle stream, for proxies that close quiet connections.
    stream_keepalive_seconds: float = Field(15.0, gt=0, le=300)
    # How often an open stream checks that its key or session is still valid.
    stream_recheck_seconds: float = Field(5.0, gt=0, le=300)
    # A dashboard sign-in lasts this long (or until sign-out, or its key is revoked).
    dashboard_session_hours: float = Field(12.0, gt=0, le=24 * 30)

    # Notifications (the notifier process, `python -m notifier`). Signing secrets of
    # webhooks are derived from this key and never stored; every API and notifier process
    # needs the same one. Empty: webhooks cannot be created (and the notifier will not start).
    secret_key: str = Field("", repr=False)
    # Delivering to loopback, private, link-local or metadata addresses: tests and local
    # development only, never in production (it lets a user make the service call inside).
    webhook_allow_private_networks: bool = False
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=60)
    # A subscription is disabled after this many deliveries in a row that ended failed.
    webhook_disable_after_failures: int = Field(10, ge=1, le=10_000)
    # Pauses before the 2nd, 3rd, ... attempt of a delivery; then NOTIFY_RETRY_REPEAT_SECONDS
    # apart until NOTIFY_GIVE_UP_SECONDS after the first attempt, when it is failed.
    notify_retry_seconds: Annotated[list[float], NoDecode] = [5, 30, 120, 600, 3600]
    notify_retry_repeat_seconds: float = Field(21_600, gt=0)
    notify_give_up_seconds: float = Field(86_400, gt=0)
    # How often the notifier looks for new history and for deliveries that are due.
    notifier_poll_seconds: float = Field(0.5, gt=0, le=60)
    # The notifier's CPU niceness: where it shares cores with workers, they come first and
    # notifications catch up when the drain eases (a lower priority, not a lost message).
    notifier_nice: int = Field(10, ge=0, le=19)
    # E-mail: SMTP_HOST empty (the local default) writes .eml files to MAIL_OUTBOX_DIR.
    smtp_host: str = ""
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str = ""
    smtp_password: str = Field("", repr=False)
    smtp_starttls: bool = True
    mail_from: str = "taskq <taskq@localhost>"
    mail_outbox_dir: str = ".taskq/outbox"
    # Where people reach the dashboard: the links in e-mails point there.
    public_url: str = "http://localhost:8000"

    # How often the relay looks for NEW tasks (stored, message not confirmed) to publish.
    relay_interval_seconds: float = Field(1.0, gt=0, le=60)

    # A running task's lease; its worker renews it every third of this. A task whose lease
    # ran out (its worker died) is handed back to the queue.
    lease_seconds: float = Field(10.0, ge=1, le=600)
    # Retry backoff: attempt n waits about RETRY_BASE_SECONDS * 2^(n-1), at most the maximum.
    retry_base_seconds: float = Field(1.0, gt=0, le=3600)
    retry_max_seconds: float = Field(60.0, gt=0, le=86_400)
    # A task whose workers died this many times is FAILED with "worker lost" (a poison task).
    max_deliveries: int = Field(5, ge=1, le=100)
    # Default per-attempt time limit; see BROKER_CONSUMER_TIMEOUT_SECONDS for the bound.
    task_timeout_seconds: int = Field(900, ge=1)
    # Must equal RabbitMQ's consumer_timeout: an unacknowledged delivery older than this
    # makes the broker close the channel and redeliver a task that is still running.
    broker_consumer_timeout_seconds: int = Field(1800, ge=120)

    # Port of each worker's Prometheus metrics; 0 turns them off.
    worker_metrics_port: int = Field(9100, ge=0, le=65535)

    # Worker: how many tasks one worker runs at once (RabbitMQ prefetch).
    worker_prefetch: int = Field(2, ge=1, le=100)
    # How often a worker looks for cancel requests of the tasks it runs.
    cancel_poll_seconds: float = Field(0.5, gt=0, le=5)
    # On SIGTERM, how long running tasks may take to finish before they are handed back.
    worker_shutdown_timeout_seconds: float = Field(30.0, ge=0, le=3600)
    simulate_min_seconds: float = Field(0.0, ge=0, le=600)
    simulate_max_seconds: float = Field(10.0, ge=0, le=600)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("notify_retry_seconds", mode="before")
    @classmethod
    def _comma_separated_seconds(cls, value: object) -> object:
        if isinstance(value, str):
            return [float(part) for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _simulate_range_is_ordered(self) -> Self:
        if self.simulate_min_seconds > self.simulate_max_seconds:
            raise ValueError("SIMULATE_MIN_SECONDS must not exceed SIMULATE_MAX_SECONDS")
        return self

    @model_validator(mode="after")
    def _timeouts_stay_below_the_broker_ack_timeout(self) -> Self:
        if self.task_timeout_seconds > self.max_task_timeout_seconds:
            raise ValueError(
                "TASK_TIMEOUT_SECONDS must stay below BROKER_CONSUMER_TIMEOUT_SECONDS "
                f"minus {ACK_TIMEOUT_MARGIN_SECONDS} s (max {self.max_task_timeout_seconds})"
            )
        if self.retry_base_seconds > self.retry_max_seconds:
            raise ValueError("RETRY_BASE_SECONDS must not exceed RETRY_MAX_SECONDS")
        return self

    @property
    def max_task_timeout_seconds(self) -> int:
        """The longest attempt allowed: the broker must never give up on a running task."""
        return self.broker_consumer_timeout_seconds - ACK_TIMEOUT_MARGIN_SECONDS


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings(...)` instead."""
    return Settings()
