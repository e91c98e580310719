import pytest
from pydantic import ValidationError

from api.schemas import TaskCreate
from shared.domain.kinds import UnknownKind, parse_params
from shared.settings import Settings


def test_defaults_fill_in_priority_kind_and_params() -> None:
    task = TaskCreate(title="t")
    assert (task.priority.value, task.kind, task.params, task.description) == (
        "MEDIUM",
        "simulate",
        {},
        "",
    )


def test_params_are_normalised_by_their_kind() -> None:
    assert TaskCreate(title="t", params={"duration": 2}).params == {"duration": 2.0}
    assert TaskCreate(title="t", kind="fail").params == {"message": "simulated failure"}


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(UnknownKind, match="fail, flaky, simulate"):
        parse_params("nope", {})


def test_params_of_another_kind_are_refused() -> None:
    with pytest.raises(ValidationError, match="params do not fit kind 'simulate'"):
        TaskCreate(title="t", params={"message": "hi"})


def test_simulate_range_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="SIMULATE_MIN_SECONDS"):
        Settings(simulate_min_seconds=5, simulate_max_seconds=1)


def test_settings_come_from_upper_case_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEUE_NAME", "jobs")
    monkeypatch.setenv("WORKER_PREFETCH", "3")
    settings = Settings()
    assert (settings.queue_name, settings.worker_prefetch) == ("jobs", 3)


@pytest.mark.parametrize(
    "body",
    [
        {"title": "t", "max_retries": True},
        {"title": "t", "timeout_seconds": "60"},
        {"title": "t", "params": {"duration": True}},
        {"title": "t", "kind": "flaky", "params": {"fail_times": 1.5}},
    ],
)
def test_numbers_are_not_coerced_from_other_json_types(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TaskCreate.model_validate(body)
