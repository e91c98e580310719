"""The RabbitMQ topology, declared identically by the API and every worker.

RabbitMQ refuses to re-declare a queue with different arguments (PRECONDITION_FAILED), so
every queue and its arguments are declared here and nowhere else.
"""

from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractQueue

from shared.domain.backoff import level_delays_s
from shared.settings import Settings

# The queue's x-max-priority. Classic queues keep one sub-queue per level, so few levels are
# cheap; 10 leaves room between LOW/MEDIUM/HIGH (1/5/9) for levels added later.
MAX_PRIORITY = 10

# The header a dead-lettered message carries to say why no worker could use it.
DEAD_LETTER_REASON_HEADER = "x-taskq-reason"


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any]


def dead_letter_queue_name(queue_name: str) -> str:
    return f"{queue_name}.dlq"


def delay_queue_name(queue_name: str, level: int) -> str:
    return f"{queue_name}.delay.{level}"


def topology(settings: Settings) -> list[QueueSpec]:
    """Every queue the service uses; the main task queue comes last.

    - `<queue>.dlq`: messages no worker can use, with the reason in a header.
    - `<queue>.delay.<n>`: retries waiting out their backoff; an expired message is
      dead-lettered back into the main queue, keeping its priority.
    - `<queue>`: the task queue, a classic priority queue.
    """
    name = settings.queue_name
    dlq = dead_letter_queue_name(name)
    back_to_main = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": name}
    levels = level_delays_s(settings.retry_base_seconds, settings.retry_max_seconds)
    return [
        QueueSpec(dlq, {}),
        *(QueueSpec(delay_queue_name(name, level), back_to_main) for level in range(len(levels))),
        QueueSpec(
            name,
            {
                "x-max-priority": MAX_PRIORITY,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": dlq,
            },
        ),
    ]


async def declare_topology(channel: AbstractChannel, settings: Settings) -> AbstractQueue:
    """Declare every queue (durable) and return the main task queue."""
    declared = [
        await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        for spec in topology(settings)
    ]
    return declared[-1]
