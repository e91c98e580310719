import uuid

import pytest

from shared.domain.enums import TaskPriority
from shared.domain.errors import MalformedMessage
from shared.messaging import messages
from shared.messaging.messages import task_message
from shared.messaging.topology import MAX_PRIORITY, topology
from shared.settings import Settings


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


def test_topology_declares_dlq_and_delay_queues_before_the_main_queue() -> None:
    settings = Settings(queue_name="jobs", retry_base_seconds=1, retry_max_seconds=8)
    dlq, *delays, main = topology(settings)
    assert dlq.name == "jobs.dlq"
    assert [d.name for d in delays] == [
        "jobs.delay.0",
        "jobs.delay.1",
        "jobs.delay.2",
        "jobs.delay.3",
    ]
    assert all(d.arguments["x-dead-letter-routing-key"] == "jobs" for d in delays)
    assert main.name == "jobs"
    assert main.arguments["x-dead-letter-routing-key"] == "jobs.dlq"
    assert main.arguments["x-max-priority"] == MAX_PRIORITY
