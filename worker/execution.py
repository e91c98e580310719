"""Running one claimed task's handler and turning what happened into an outcome."""

import asyncio
import logging
import time
import traceback
from dataclasses import dataclass
from typing import Any

from shared.domain import transitions as t
from shared.domain.kinds import parse_params
from shared.domain.outcomes import NUL_IN_RESULT, contains_nul, storable_error
from shared.domain.records import TaskRecord
from shared.settings import Settings
from worker.context import TaskContext
from worker.handlers import HANDLERS

log = logging.getLogger(__name__)

# `error` keeps the exception and the innermost frames; a whole deep traceback is noise.
ERROR_MAX_CHARS = 4000


TIMEOUT_ERROR = "timeout"


class TaskTimedOut(Exception):
    """The attempt ran past the task's timeout_seconds."""


@dataclass(frozen=True)
class Outcome:
    # COMPLETE, FAIL or CANCEL_RUNNING; None when the worker gave the attempt up because
    # it could not keep its lease: then it records nothing, and the reaper takes over.
    transition: t.Transition | None
    result: Any = None
    error: str | None = None
    reason: str | None = None


ABANDONED = Outcome(None)


class Execution:
    """A handler running for one attempt of a task; the heartbeat can stop it."""

    def __init__(self, task: TaskRecord, settings: Settings, lease_deadline: float) -> None:
        self.task = task
        self.context = TaskContext(task_id=task.id, attempt=task.attempts, settings=settings)
        # time.monotonic() by which the lease must be renewed, or the attempt given up.
        self.lease_deadline = lease_deadline
        self._abandoned = False
        self._handler = asyncio.create_task(self._call_handler(), name=f"handler-{task.id}")

    def cancel(self) -> None:
        """Stop the handler because the API asked to cancel the task."""
        self.context.request_cancel()
        self._handler.cancel()

    def abandon(self) -> None:
        """Stop the handler because its lease is lost (or about to be): another worker may
        run the task next, so this attempt must neither go on nor record anything."""
        self._abandoned = True
        self._handler.cancel()

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def lease_expiring(self, margin_s: float) -> bool:
        return time.monotonic() >= self.lease_deadline - margin_s

    async def outcome(self) -> Outcome:
        """Wait for the handler. If this wait itself is cancelled, the handler is too."""
        try:
            await asyncio.wait({self._handler})
        except asyncio.CancelledError:
            self._handler.cancel()
            raise
        if self._handler.cancelled():
            if self._abandoned:
                return ABANDONED
            if self.context.cancel_requested:
                return Outcome(t.CANCEL_RUNNING)
            raise asyncio.CancelledError
        exc = self._handler.exception()
        if isinstance(exc, TaskTimedOut):
            return Outcome(t.FAIL, error=TIMEOUT_ERROR, reason=TIMEOUT_ERROR)
        if exc is not None:
            return Outcome(t.FAIL, error=storable_error(describe(exc)))
        result = self._handler.result()
        if contains_nul(result):
            return Outcome(t.FAIL, error=NUL_IN_RESULT, reason="result not storable")
        return Outcome(t.COMPLETE, result=result)

    async def _call_handler(self) -> Any:
        params = parse_params(self.task.kind, self.task.params)
        limit = asyncio.timeout(self.task.timeout_seconds)
        try:
            async with limit:
                return await HANDLERS[self.task.kind](self.context, params)
        except TimeoutError:
            if limit.expired():
                raise TaskTimedOut from None
            raise


def describe(exc: BaseException) -> str:
    """`Type: message`, then the last frames of the traceback, within ERROR_MAX_CHARS."""
    headline = f"{type(exc).__name__}: {exc}"
    frames = "".join(traceback.format_exception(exc))
    text = f"{headline}\n\n{frames}"
    if len(text) <= ERROR_MAX_CHARS:
        return text
    tail = frames[-(ERROR_MAX_CHARS - len(headline) - 10) :]
    return f"{headline}\n\n...{tail}"[:ERROR_MAX_CHARS]
