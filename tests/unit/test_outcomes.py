"""What a handler returns must be storable; what it cannot store ends FAILED at once."""

import asyncio
from typing import Any

import pytest

from shared.domain import transitions as t
from shared.domain.outcomes import NUL_IN_RESULT, contains_nul, storable_error
from shared.settings import Settings
from tests.support.tasks import task_record
from worker import handlers
from worker.execution import Execution


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", False),
        ("a\x00b", True),
        ({"k": "v"}, False),
        ({"k\x00": "v"}, True),
        ({"k": ["x", {"deep": "\x00"}]}, True),
        ([1, 2.5, None, True], False),
    ],
)
def test_nul_is_found_anywhere_in_a_json_value(value: Any, expected: bool) -> None:
    assert contains_nul(value) is expected


def test_an_error_text_keeps_its_nul_written_out() -> None:
    assert storable_error("bad\x00byte") == "bad\\x00byte"


async def run_with(monkeypatch: pytest.MonkeyPatch, handler: Any) -> Any:
    monkeypatch.setitem(handlers.HANDLERS, "simulate", handler)
    execution = Execution(task_record(timeout_seconds=5), Settings(), lease_deadline=float("inf"))
    return await asyncio.wait_for(execution.outcome(), timeout=5)


async def test_a_result_holding_nul_fails_the_task_saying_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def returns_nul(ctx: Any, params: Any) -> dict[str, str]:
        return {"text": "a\x00b"}

    outcome = await run_with(monkeypatch, returns_nul)

    assert outcome.transition is t.FAIL
    assert outcome.error == NUL_IN_RESULT and outcome.result is None


async def test_an_error_message_holding_nul_is_stored_escaped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def raises_nul(ctx: Any, params: Any) -> None:
        raise ValueError("bad\x00byte")

    outcome = await run_with(monkeypatch, raises_nul)

    assert outcome.transition is t.FAIL
    assert outcome.error.startswith("ValueError: bad\\x00byte")
    assert "\x00" not in outcome.error
