"""Domain errors. A subclass's docstring is its default message."""


class TaskServiceError(Exception):
    """The task service could not do what was asked."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class TaskNotFound(TaskServiceError):
    """No task has this id."""


class TaskAlreadyFinished(TaskServiceError):
    """The task has already finished and can no longer change."""


class TimeoutTooLong(TaskServiceError):
    """timeout_seconds exceeds what the broker's acknowledgement timeout allows."""


class DatabaseUnavailable(TaskServiceError):
    """The database cannot be reached right now; try again shortly."""


class BrokerUnavailable(TaskServiceError):
    """The message broker cannot be reached or did not confirm the message."""


class MalformedMessage(TaskServiceError):
    """The queue message is not a task message."""
