"""Logging for the API and the worker: readable text locally, one JSON object per line in
containers (LOG_FORMAT=json), with task_id, status, attempt and worker_id where they apply."""

import logging
import re
import sys

from pythonjsonlogger.json import JsonFormatter

from shared.domain.keys import KEY_PREFIX
from shared.settings import Settings

KEY_PATTERN = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_\-]{8,}")

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
JSON_FIELDS = "%(levelname)s %(name)s %(message)s"


class RedactKeys(logging.Filter):
    """Replaces anything shaped like an API key with `tq_[redacted]`, whatever logged it: a
    client that puts its key in a URL must not get it into the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if KEY_PREFIX in message:
            record.msg, record.args = KEY_PATTERN.sub(f"{KEY_PREFIX}[redacted]", message), None
        return True


class StaticFields(logging.Filter):
    """Stamps fields that hold for the whole process (the worker's id) on every record."""

    def __init__(self, **fields: str) -> None:
        super().__init__()
        self._fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in self._fields.items():
            setattr(record, name, value)
        return True


def task_fields(
    task_id: object, status: str | None = None, attempt: int | None = None
) -> dict[str, object]:
    """`extra=` for a log call about a task; JSON logs carry these as their own keys."""
    fields: dict[str, object] = {"task_id": str(task_id)}
    if status is not None:
        fields["status"] = status
    if attempt is not None:
        fields["attempt"] = attempt
    return fields


def log_task(
    logger: logging.Logger,
    level: int,
    message: str,
    *args: object,
    task_id: object,
    status: str | None = None,
    attempt: int | None = None,
) -> None:
    """Log a line about a task, building its fields only if the line is emitted: the hot
    paths log two per task, and at WARNING most of them are not."""
    if logger.isEnabledFor(level):
        logger.log(level, message, *args, extra=task_fields(task_id, status, attempt))


def configure_logging(settings: Settings, **process_fields: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                JSON_FIELDS,
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp=True,
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactKeys())
    if process_fields:
        handler.addFilter(StaticFields(**process_fields))
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    # Uvicorn set up its own handlers and levels before importing the app: route its error
    # and access logs through ours, so they share the format, at LOG_LEVEL (with its own
    # INFO, LOG_LEVEL=WARNING still wrote an access line per request).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
    # aio-pika and aiormq log every reconnect attempt at length; their warnings are enough.
    quiet = max(logging.WARNING, logging.getLevelName(settings.log_level))
    for noisy in ("aio_pika", "aiormq"):
        logging.getLogger(noisy).setLevel(quiet)
