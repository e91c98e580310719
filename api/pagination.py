"""Opaque cursors for keyset pagination of the task list."""

import base64
import binascii
import uuid
from datetime import datetime

from fastapi.exceptions import RequestValidationError

from shared.db.tasks import PagePosition
from shared.domain.records import TaskRecord


def encode(task: TaskRecord) -> str:
    """The cursor of the page that follows `task`."""
    return encode_position((task.created_at, task.id))


def encode_position(position: PagePosition) -> str:
    created_at, task_id = position
    raw = f"{created_at.isoformat()}|{task_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> PagePosition:
    """The position a cursor names; a 422 like any other bad query parameter if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, task_id = raw.split("|")
        return datetime.fromisoformat(created_at), uuid.UUID(task_id)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        error = {"type": "value_error", "loc": ["query", "cursor"], "msg": "not a valid cursor"}
        raise RequestValidationError([{**error, "input": cursor}]) from exc
