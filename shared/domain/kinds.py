"""Task kinds and the parameters each accepts: the API validates exactly what the worker runs.

Adding a kind: a params model here, a handler in `worker.handlers`, one line in each registry.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_KIND = "simulate"


class KindParams(BaseModel):
    """Base of every kind's params: unknown keys are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulateParams(KindParams):
    """Sleep for `duration` seconds; without it the worker picks a random duration."""

    duration: float | None = Field(
        None, ge=0, le=600, strict=True, description="Seconds to sleep (0-600)"
    )


class FailParams(KindParams):
    """Raise an error with `message`: a task that always fails, for trying failure paths."""

    message: str = Field("simulated failure", max_length=1000)


class FlakyParams(KindParams):
    """Fail the first `fail_times` attempts, then succeed: shows retries at work."""

    fail_times: int = Field(1, ge=0, le=10, strict=True)


KIND_PARAMS: dict[str, type[KindParams]] = {
    "simulate": SimulateParams,
    "fail": FailParams,
    "flaky": FlakyParams,
}


class UnknownKind(ValueError):
    def __init__(self, kind: str) -> None:
        known = ", ".join(sorted(KIND_PARAMS))
        super().__init__(f"unknown kind {kind!r}; known kinds: {known}")


def parse_params(kind: str, params: dict[str, Any]) -> KindParams:
    """The validated params of `kind`; raises UnknownKind or pydantic's ValidationError."""
    model = KIND_PARAMS.get(kind)
    if model is None:
        raise UnknownKind(kind)
    return model.model_validate(params)
