"""Marking confirmed tasks PENDING, many in one statement: the create path's group commit.

Every create ends with the guarded NEW -> PENDING once the broker confirmed its message.
Under load many creates reach that point together, so they share one statement instead of
one each: while a statement is out, the marks that arrive wait and go in the next one.
Alone, a mark goes out at once (nothing waits for a batch to fill). Each task's guard is
its own, exactly as in the one-task statement: what one statement marks is the same.
"""

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import connect
from shared.db.tasks import TaskRepository
from shared.domain.records import TaskRecord

# Tasks per statement at most: a few dozen rows keep the statement short.
BATCH = 64
# A task to mark, and where its caller waits for the outcome.
Waiting = tuple[TaskRecord, "asyncio.Future[TaskRecord | None]"]


class PublishMarks:
    """One per process. `mark(task)` returns the marked row, or None when a worker had
    moved the task on already (its message outran the mark)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._waiting: list[Waiting] = []
        self._sender: asyncio.Task[None] | None = None

    async def mark(self, task: TaskRecord) -> TaskRecord | None:
        future: asyncio.Future[TaskRecord | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((task, future))
        if self._sender is None:
            # Its own task, not the caller's: a request that goes away mid-statement must
            # not take the other requests' marks with it.
            self._sender = asyncio.create_task(self._send_all(), name="publish-marks")
        return await asyncio.shield(future)

    async def _send_all(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:BATCH], self._waiting[BATCH:]
                await self._send(batch)
        finally:
            self._sender = None

    async def _send(self, batch: list[Waiting]) -> None:
        try:
            async with connect(self._engine) as conn:
                marked = await TaskRepository(conn).mark_published_many([t for t, _ in batch])
        except Exception as exc:  # DatabaseUnavailable, mostly: each caller decides
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except asyncio.CancelledError:  # shutting down
            for _, future in batch:
                future.cancel()
            raise
        for task, future in batch:
            if not future.done():
                future.set_result(marked.get(task.id))
