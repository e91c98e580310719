"""Domain errors become JSON responses; nothing ever answers with a stack trace."""

import logging

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from shared.domain.errors import (
    DatabaseUnavailable,
    TaskAlreadyFinished,
    TaskNotFound,
    TaskServiceError,
    TimeoutTooLong,
)

log = logging.getLogger(__name__)

STATUS_OF: dict[type[TaskServiceError], int] = {
    TaskNotFound: status.HTTP_404_NOT_FOUND,
    TaskAlreadyFinished: status.HTTP_409_CONFLICT,
    DatabaseUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    code = next(
        (code for kind, code in STATUS_OF.items() if isinstance(exc, kind)),
        status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
    if code >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    headers = {"Retry-After": "1"} if code == status.HTTP_503_SERVICE_UNAVAILABLE else None
    return JSONResponse({"detail": str(exc)}, status_code=code, headers=headers)


async def _timeout_too_long(request: Request, exc: Exception) -> JSONResponse:
    """Shaped like FastAPI's own 422s, which is what the schema promises for 422."""
    error = {"type": "value_error", "loc": ["body", "timeout_seconds"], "msg": str(exc)}
    return JSONResponse({"detail": [error]}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(TimeoutTooLong, _timeout_too_long)
    app.add_exception_handler(TaskServiceError, _domain_error)
    app.add_exception_handler(Exception, _unexpected_error)
