"""How many messages wait in the task queue and its dead-letter queue, read from the broker.

Ready counts come over AMQP (passive declares). Unacknowledged counts are not in AMQP at
all; they come from RabbitMQ's management API when BROKER_MANAGEMENT_URL is set, else null.
"""

import logging
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import aiohttp

from shared.messaging.publisher import Publisher
from shared.messaging.topology import dead_letter_queue_name
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueDepths:
    ready: int | None
    unacknowledged: int | None
    dead_letters: int | None


async def queue_depths(publisher: Publisher, settings: Settings) -> QueueDepths:
    name, dlq = settings.queue_name, dead_letter_queue_name(settings.queue_name)
    ready = await publisher.ready_counts([name, dlq]) or {}
    return QueueDepths(
        ready=ready.get(name),
        unacknowledged=await _unacknowledged(settings) if ready else None,
        dead_letters=ready.get(dlq),
    )


async def _unacknowledged(settings: Settings) -> int | None:
    base = settings.broker_management_url
    if not base:
        return None
    vhost = quote(urlsplit(settings.amqp_url).path.lstrip("/") or "/", safe="")
    # aiohttp takes the credentials in the URL as basic auth.
    url = f"{base.rstrip('/')}/api/queues/{vhost}/{quote(settings.queue_name, safe='')}"
    timeout = aiohttp.ClientTimeout(total=settings.publish_timeout_seconds)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, raise_for_status=True) as http,
            http.get(url) as response,
        ):
            return int((await response.json()).get("messages_unacknowledged", 0))
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        # The URL carries credentials: name the error, never the URL.
        log.warning("could not read unacknowledged messages: %s", type(exc).__name__)
        return None
