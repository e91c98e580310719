"""The handler registry: one async function per task kind.

Adding a kind: its params model in `shared.kinds.KIND_PARAMS`, its function here in HANDLERS.
A handler returns a JSON-serialisable result or raises; it must await now and then so that
cancellation can interrupt it.
"""

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from shared.domain.kinds import KIND_PARAMS, FailParams, FlakyParams, SimulateParams
from worker.context import TaskContext

Handler = Callable[[TaskContext, Any], Awaitable[Any]]


class SimulatedFailure(Exception):
    """Raised by the `fail` and `flaky` kinds."""


async def simulate(ctx: TaskContext, params: SimulateParams) -> dict[str, float]:
    """Pretend to work: sleep for `duration`, or a random time in the configured range."""
    seconds = params.duration
    if seconds is None:
        settings = ctx.settings
        seconds = random.uniform(settings.simulate_min_seconds, settings.simulate_max_seconds)
    await asyncio.sleep(seconds)
    return {"slept": seconds}


async def fail(ctx: TaskContext, params: FailParams) -> None:
    raise SimulatedFailure(params.message)


async def flaky(ctx: TaskContext, params: FlakyParams) -> dict[str, int]:
    if ctx.attempt <= params.fail_times:
        raise SimulatedFailure(f"planned failure {ctx.attempt} of {params.fail_times}")
    return {"succeeded_on_attempt": ctx.attempt}


HANDLERS: dict[str, Handler] = {
    "simulate": simulate,
    "fail": fail,
    "flaky": flaky,
}

assert HANDLERS.keys() == KIND_PARAMS.keys(), "every kind needs both params and a handler"
