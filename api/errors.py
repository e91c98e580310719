"""Domain errors become JSON responses; nothing ever answers with a stack trace."""

import logging
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from api.schemas import ErrorOut
from shared.domain.errors import (
    AddressRefused,
    CsrfRefused,
    DatabaseUnavailable,
    DeliveryInFlight,
    DeliveryNotFound,
    EmailMissing,
    Forbidden,
    KeyNotFound,
    LastAdmin,
    NameTaken,
    NotAuthenticated,
    NotConfigured,
    TaskAlreadyFinished,
    TaskNotFinished,
    TaskNotFound,
    TaskRunning,
    TaskServiceError,
    TimeoutTooLong,
    UnknownEventId,
    UserNotFound,
    WebhookNotFound,
)

log = logging.getLogger(__name__)

# What every authenticated route may answer besides its own responses (for the schema).
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No valid API key (or dashboard session)"},
    403: {"model": ErrorOut, "description": "Only an admin may do this; or no CSRF token"},
}
ERRORS: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorOut, "description": "The database is unreachable"},
}
# What a route that reads a JSON body may answer before it ever sees the body's fields.
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Body is not UTF-8 text"},
    413: {"model": ErrorOut, "description": "Body over 1 MiB"},
}

STATUS_OF: dict[type[TaskServiceError], int] = {
    NotAuthenticated: status.HTTP_401_UNAUTHORIZED,
    Forbidden: status.HTTP_403_FORBIDDEN,
    CsrfRefused: status.HTTP_403_FORBIDDEN,
    UnknownEventId: status.HTTP_400_BAD_REQUEST,
    WebhookNotFound: status.HTTP_404_NOT_FOUND,
    DeliveryNotFound: status.HTTP_404_NOT_FOUND,
    DeliveryInFlight: status.HTTP_409_CONFLICT,
    EmailMissing: status.HTTP_409_CONFLICT,
    NotConfigured: status.HTTP_503_SERVICE_UNAVAILABLE,
    TaskNotFound: status.HTTP_404_NOT_FOUND,
    UserNotFound: status.HTTP_404_NOT_FOUND,
    KeyNotFound: status.HTTP_404_NOT_FOUND,
    TaskAlreadyFinished: status.HTTP_409_CONFLICT,
    TaskRunning: status.HTTP_409_CONFLICT,
    TaskNotFinished: status.HTTP_409_CONFLICT,
    NameTaken: status.HTTP_409_CONFLICT,
    LastAdmin: status.HTTP_409_CONFLICT,
    DatabaseUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}


HEADERS = {
    status.HTTP_401_UNAUTHORIZED: {"WWW-Authenticate": "Bearer"},
    status.HTTP_503_SERVICE_UNAVAILABLE: {"Retry-After": "1"},
}


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    code = next(
        (code for kind, code in STATUS_OF.items() if isinstance(exc, kind)),
        status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
    if code >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": str(exc)}, status_code=code, headers=HEADERS.get(code))


async def _timeout_too_long(request: Request, exc: Exception) -> JSONResponse:
    """Shaped like FastAPI's own 422s, which is what the schema promises for 422."""
    error = {"type": "value_error", "loc": ["body", "timeout_seconds"], "msg": str(exc)}
    return JSONResponse({"detail": [error]}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _address_refused(request: Request, exc: Exception) -> JSONResponse:
    """A 422 on the url field, like any other invalid input."""
    message = f"{exc}; only public addresses (WEBHOOK_ALLOW_PRIVATE_NETWORKS is off)"
    error = {"type": "value_error", "loc": ["body", "url"], "msg": message}
    return JSONResponse({"detail": [error]}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(TimeoutTooLong, _timeout_too_long)
    app.add_exception_handler(AddressRefused, _address_refused)
    app.add_exception_handler(TaskServiceError, _domain_error)
    app.add_exception_handler(Exception, _unexpected_error)
