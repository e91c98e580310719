"""Background loops survive their own failures: logged, counted, run again after a pause."""

import asyncio
import logging

import pytest

from shared.background.periodic import Loop, Supervisor, run_loop
from shared.domain.errors import DatabaseUnavailable
from tests.support.metrics import loop_failures


async def test_a_step_that_raises_is_logged_counted_and_run_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0
    recovered = asyncio.Event()

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError(f"injected fault {calls}")
        recovered.set()

    before = loop_failures("flaky-loop")
    with caplog.at_level(logging.WARNING, logger="shared.background.periodic"):
        runner = asyncio.create_task(run_loop(Loop("flaky-loop", 0.01, step), restart_pause_s=0.01))
        await asyncio.wait_for(recovered.wait(), timeout=5)
        runner.cancel()

    assert loop_failures("flaky-loop") - before == 2
    crashes = [r for r in caplog.records if "flaky-loop crashed" in r.getMessage()]
    assert len(crashes) == 2
    assert all(r.exc_info and "injected fault" in str(r.exc_info[1]) for r in crashes)


async def test_a_database_outage_pauses_the_loop_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0
    recovered = asyncio.Event()

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise DatabaseUnavailable()
        recovered.set()

    with caplog.at_level(logging.WARNING, logger="shared.background.periodic"):
        runner = asyncio.create_task(run_loop(Loop("db-loop", 0.01, step)))
        await asyncio.wait_for(recovered.wait(), timeout=5)
        runner.cancel()

    [paused] = [r for r in caplog.records if "db-loop" in r.getMessage()]
    assert "paused: database unavailable" in paused.getMessage()
    assert paused.exc_info is None


async def test_a_step_asking_for_more_runs_again_without_waiting() -> None:
    calls = 0
    done = asyncio.Event()

    async def step() -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:
            done.set()
        return True  # a full batch: more is waiting

    runner = asyncio.create_task(run_loop(Loop("busy-loop", 3600, step)))
    await asyncio.wait_for(done.wait(), timeout=5)
    runner.cancel()
    assert calls >= 3


async def test_a_loop_stops_even_when_its_cancellation_comes_back_as_another_error() -> None:
    started = asyncio.Event()

    async def step() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            # What SQLAlchemy does when a cancel hits a connection being closed.
            raise RuntimeError("Can't reconnect until invalid transaction is rolled back") from None

    supervisor = Supervisor()
    supervisor.start(Loop("swallowing-loop", 0.01, step))
    await asyncio.wait_for(started.wait(), timeout=5)

    stopping = asyncio.create_task(supervisor.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)

    assert stopping in done, "the loop lived on after it was cancelled"
