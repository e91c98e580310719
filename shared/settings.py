"""Every setting of the API and the worker, read once from the environment."""

from functools import lru_cache
from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class Settings(BaseSettings):
    """Environment variables are the field names in upper case (`DATABASE_URL`, ...)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/tasks"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    queue_name: str = Field("tasks", min_length=1, max_length=200, pattern=r"^[\w.\-]+$")
    log_level: LogLevel = "INFO"

    # Database pool of each process. The API holds one connection per in-flight request.
    db_pool_size: int = Field(10, ge=1, le=100)
    db_connect_timeout_seconds: float = Field(5.0, gt=0)
    # How long a request waits for a free pooled connection under load before answering 503.
    db_pool_timeout_seconds: float = Field(30.0, gt=0)
    # A publish that the broker has not confirmed by then leaves the task NEW (never a hang).
    publish_timeout_seconds: float = Field(2.0, gt=0, le=60)
    # How often a process that lost the broker tries to reach it again.
    broker_retry_seconds: float = Field(2.0, gt=0, le=60)

    # Worker: how many tasks one worker runs at once (RabbitMQ prefetch).
    worker_prefetch: int = Field(2, ge=1, le=100)
    # How often a worker looks for cancel requests of the tasks it runs.
    cancel_poll_seconds: float = Field(0.5, gt=0, le=5)
    # On SIGTERM, how long running tasks may take to finish before they are handed back.
    worker_shutdown_timeout_seconds: float = Field(30.0, ge=0, le=3600)
    simulate_min_seconds: float = Field(0.0, ge=0, le=600)
    simulate_max_seconds: float = Field(10.0, ge=0, le=600)

    @model_validator(mode="after")
    def _simulate_range_is_ordered(self) -> Self:
        if self.simulate_min_seconds > self.simulate_max_seconds:
            raise ValueError("SIMULATE_MIN_SECONDS must not exceed SIMULATE_MAX_SECONDS")
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings(...)` instead."""
    return Settings()
