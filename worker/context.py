"""What a handler gets besides its params: which task it runs and whether to stop."""

import uuid
from dataclasses import dataclass, field

from shared.settings import Settings


@dataclass
class TaskContext:
    task_id: uuid.UUID
    attempt: int
    settings: Settings
    _cancel_requested: bool = field(default=False, init=False)

    @property
    def cancel_requested(self) -> bool:
        """True once the API asked to cancel; a handler in a blocking loop should return early.

        Handlers that await are interrupted by asyncio cancellation anyway.
        """
        return self._cancel_requested

    def request_cancel(self) -> None:
        self._cancel_requested = True
