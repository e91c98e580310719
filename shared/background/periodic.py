"""Supervised background loops: the relay, the reaper, the heartbeat, and those to come.

Each loop is a step run every `interval_s`. A step that raises never ends its loop
silently: the error is logged (with its traceback, unless it is the database being
away), counted in `taskq_background_loop_failures_total{loop}`, and the loop runs again
after a pause. A step may return True to run again at once (a full batch: more waiting).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import Counter

from shared.domain.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

FAILURES = Counter(
    "taskq_background_loop_failures_total",
    "Background loop steps that raised, by loop (restarted after a pause)",
    ["loop"],
)
# After a crash, long enough not to spin on a persistent fault, short enough that a
# heartbeat that crashed once still renews its leases in time.
RESTART_PAUSE_S = 1.0


@dataclass(frozen=True)
class Loop:
    name: str
    interval_s: float
    step: Callable[[], Awaitable[bool | None]]


async def run_loop(loop: Loop, restart_pause_s: float = RESTART_PAUSE_S) -> None:
    """Run `loop.step` forever, every `loop.interval_s`; survive whatever it raises."""
    FAILURES.labels(loop.name)  # the series exists at 0 before the first failure
    while True:
        try:
            again = await loop.step()
        except DatabaseUnavailable:
            FAILURES.labels(loop.name).inc()
            log.warning("%s paused: database unavailable", loop.name)
            again = False
        except Exception:
            if _being_stopped():
                raise asyncio.CancelledError() from None
            FAILURES.labels(loop.name).inc()
            log.exception("%s crashed; restarting in %.1f s", loop.name, restart_pause_s)
            await asyncio.sleep(restart_pause_s)
            continue
        # Even "again" yields once: a step that never suspends must not starve the loop.
        await asyncio.sleep(0 if again else loop.interval_s)


def _being_stopped() -> bool:
    """Whether this loop's task was cancelled. A library may turn the CancelledError it
    got into an error of its own (SQLAlchemy does, when a cancel hits a connection being
    closed); taken for a crash, the loop would live on and its stop would wait forever."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Supervisor:
    """Owns a process's background loops: starts them, and stops them at shutdown."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, *loops: Loop) -> None:
        for loop in loops:
            self._tasks.append(asyncio.create_task(run_loop(loop), name=loop.name))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
