"""The task message on the queue: `{"task_id": "<uuid>"}`. The database holds everything else."""

import json
import uuid

from shared.errors import MalformedMessage

CONTENT_TYPE = "application/json"


def encode(task_id: uuid.UUID) -> bytes:
    return json.dumps({"task_id": str(task_id)}).encode()


def decode(body: bytes) -> uuid.UUID:
    """The task id a message carries; MalformedMessage says why there is none."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessage("message body is not JSON") from exc
    if not isinstance(payload, dict) or "task_id" not in payload:
        raise MalformedMessage("message has no task_id")
    try:
        return uuid.UUID(str(payload["task_id"]))
    except ValueError as exc:
        raise MalformedMessage("task_id is not a UUID") from exc
