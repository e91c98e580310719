import uuid

import pytest

from shared import messages
from shared.broker import MAX_PRIORITY, task_message, topology
from shared.enums import TaskPriority
from shared.errors import MalformedMessage


def test_a_task_id_survives_encoding() -> None:
    task_id = uuid.uuid4()
    assert messages.decode(messages.encode(task_id)) == task_id


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{oops", "not JSON"),
        (b"[1, 2]", "no task_id"),
        (b'{"id": "x"}', "no task_id"),
        (b'{"task_id": "42"}', "not a UUID"),
    ],
)
def test_malformed_bodies_say_what_is_wrong(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        messages.decode(body)


def test_priorities_are_ordered_and_fit_the_queue() -> None:
    levels = [p.broker_priority for p in (TaskPriority.LOW, TaskPriority.MEDIUM, TaskPriority.HIGH)]
    assert levels == sorted(set(levels))
    assert levels[0] > 0 and levels[-1] <= MAX_PRIORITY


def test_task_messages_are_persistent_and_identified() -> None:
    task_id = uuid.uuid4()
    message = task_message(task_id, TaskPriority.HIGH)
    assert message.delivery_mode.value == 2
    assert message.message_id == str(task_id)
    assert message.priority == TaskPriority.HIGH.broker_priority


def test_main_queue_dead_letters_into_its_dlq_declared_first() -> None:
    dlq, main = topology("jobs")
    assert dlq.name == "jobs.dlq"
    assert main.arguments["x-dead-letter-routing-key"] == "jobs.dlq"
    assert main.arguments["x-max-priority"] == MAX_PRIORITY
