"""The task message on the queue: `{"task_id": "<uuid>", "generation": <n>}`, the task and
which dispatch of it the message is. The database holds everything else."""

import json
import uuid
from dataclasses import dataclass

import aio_pika

from shared.domain.enums import TaskPriority
from shared.domain.errors import MalformedMessage

CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class Dispatched:
    """What a task message says: which task, and which dispatch of it (None: a message
    from before dispatch generations, which any dispatch accepts)."""

    task_id: uuid.UUID
    generation: int | None


def encode(task_id: uuid.UUID, generation: int | None = None) -> bytes:
    payload: dict[str, object] = {"task_id": str(task_id)}
    if generation is not None:
        payload["generation"] = generation
    return json.dumps(payload).encode()


def decode(body: bytes) -> uuid.UUID:
    """The task id a message carries; MalformedMessage says why there is none."""
    return decode_dispatched(body).task_id


def decode_dispatched(body: bytes) -> Dispatched:
    """The task and dispatch a message names; MalformedMessage says why it names none."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessage("message body is not JSON") from exc
    if not isinstance(payload, dict) or "task_id" not in payload:
        raise MalformedMessage("message has no task_id")
    try:
        task_id = uuid.UUID(str(payload["task_id"]))
    except ValueError as exc:
        raise MalformedMessage("task_id is not a UUID") from exc
    generation = payload.get("generation")
    if generation is not None and (type(generation) is not int or generation < 0):
        raise MalformedMessage("generation is not a whole number")
    return Dispatched(task_id, generation)


def task_message(
    task_id: uuid.UUID,
    priority: TaskPriority,
    *,
    generation: int | None = None,
    expiration_s: float | None = None,
) -> aio_pika.Message:
    """A persistent message naming the task and its dispatch, at the broker priority of
    `priority`."""
    return aio_pika.Message(
        encode(task_id, generation),
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=priority.broker_priority,
        message_id=str(task_id),
        expiration=expiration_s,
    )
