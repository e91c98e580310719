"""Domain errors. A subclass's docstring is its default message."""


class TaskServiceError(Exception):
    """The task service could not do what was asked."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class TaskNotFound(TaskServiceError):
    """No task has this id."""


class TaskAlreadyFinished(TaskServiceError):
    """The task has already finished and can no longer change."""


class TaskNotFinished(TaskServiceError):
    """Only a FAILED or CANCELLED task can be retried."""


class TaskRunning(TaskServiceError):
    """The task is running; its priority can no longer change."""


class TimeoutTooLong(TaskServiceError):
    """timeout_seconds exceeds what the broker's acknowledgement timeout allows."""


class DatabaseUnavailable(TaskServiceError):
    """The database cannot be reached right now; try again shortly."""


class BrokerUnavailable(TaskServiceError):
    """The message broker cannot be reached or did not confirm the message."""


class MalformedMessage(TaskServiceError):
    """The queue message is not a task message."""


class NotAuthenticated(TaskServiceError):
    """A valid API key is required: send it as `Authorization: Bearer <key>` or `X-API-Key`."""


class Forbidden(TaskServiceError):
    """Only an admin may do this."""


class CsrfRefused(TaskServiceError):
    """A changing request made with a dashboard session must carry its X-CSRF-Token."""


class UnknownEventId(TaskServiceError):
    """Last-Event-ID names no event; reconnect without it, or with 0 for all history."""


class WebhookNotFound(TaskServiceError):
    """No webhook of yours has this id."""


class DeliveryNotFound(TaskServiceError):
    """This webhook has no delivery with this id."""


class DeliveryInFlight(TaskServiceError):
    """An attempt of this delivery is under way; redeliver it once that has ended."""


class AddressRefused(TaskServiceError):
    """The URL's host is a loopback, private, link-local or metadata address."""


class EmailMissing(TaskServiceError):
    """Set an email address on the user before turning e-mail notifications on."""


class NotConfigured(TaskServiceError):
    """The server is not configured for this."""


class UserNotFound(TaskServiceError):
    """No user has this id."""


class NameTaken(TaskServiceError):
    """A user with this name exists already."""


class LastAdmin(TaskServiceError):
    """The last active admin cannot be disabled or demoted."""


class KeyNotFound(TaskServiceError):
    """No API key of yours has this id."""
