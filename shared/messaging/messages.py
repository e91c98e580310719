"""The task message on the queue: `{"task_id": "<uuid>"}`. The database holds everything else."""

import json
import uuid

import aio_pika

from shared.domain.enums import TaskPriority
from shared.domain.errors import MalformedMessage

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


def task_message(
    task_id: uuid.UUID, priority: TaskPriority, *, expiration_s: float | None = None
) -> aio_pika.Message:
    """A persistent message naming the task, at the broker priority of `priority`."""
    return aio_pika.Message(
        encode(task_id),
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=priority.broker_priority,
        message_id=str(task_id),
        expiration=expiration_s,
    )
