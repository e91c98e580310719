"""One webhook attempt: refuse private addresses, sign (Standard Webhooks), POST once."""

import asyncio
import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from standardwebhooks.webhooks import Webhook

from shared import __version__
from shared.domain.errors import AddressRefused
from shared.domain.notifications import encode_payload, signing_secret
from shared.domain.records import DeliveryRecord, WebhookRecord
from shared.services.webhook_targets import PublicOnlyResolver, check_literal
from shared.settings import Settings

# What is read of a receiver's answer: enough for an error message, never a whole page.
RESPONSE_READ_BYTES = 1024


@dataclass(frozen=True)
class Attempt:
    delivered: bool
    code: int | None = None
    error: str | None = None


def message_id(delivery: DeliveryRecord) -> str:
    """`webhook-id`: the delivery's, the same on every attempt, so receivers can dedupe."""
    return f"msg_{delivery.id.hex}"


def body_of(delivery: DeliveryRecord) -> str:
    return delivery.payload_json or encode_payload(delivery.payload)


@functools.lru_cache(maxsize=4096)
def signer(secret_key: str, webhook_id: uuid.UUID, salt: bytes) -> Webhook:
    """A subscription's signer, kept for the next delivery: its secret derived (an HMAC)
    and decoded again for every attempt cost the notifier as much as the signing."""
    return Webhook(signing_secret(secret_key, webhook_id, salt))


def signed_headers(signing: Webhook, delivery: DeliveryRecord, body: str) -> dict[str, str]:
    now = datetime.now(UTC)
    msg_id = message_id(delivery)
    return {
        "content-type": "application/json",
        "user-agent": f"taskq-webhooks/{__version__}",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signing.sign(msg_id, now, body),
    }


def session(settings: Settings, connections: int) -> aiohttp.ClientSession:
    """The notifier's one HTTP client: kept-alive connections, no redirects followed, no
    proxy from the environment, and answers left compressed (only their start is read).

    aiohttp, not httpx: at 20 requests in flight httpx spent 4.5 ms of CPU per request
    here (its pool checks every connection on every request), aiohttp 0.3 ms; on a shared
    machine that CPU is taken from the workers' drain. Unless private networks are allowed,
    names resolve only to public addresses, checked on the answer the connection uses.
    """
    resolver = None if settings.webhook_allow_private_networks else PublicOnlyResolver()
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, resolver=resolver),
        timeout=aiohttp.ClientTimeout(total=settings.webhook_timeout_seconds),
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding",),
    )


async def attempt(
    client: aiohttp.ClientSession,
    webhook: WebhookRecord,
    delivery: DeliveryRecord,
    settings: Settings,
) -> Attempt:
    """POST the delivery once: 2xx is delivered, anything else (or no answer) is not."""
    if not settings.webhook_allow_private_networks:
        try:
            check_literal(webhook.url)  # names: the session's resolver checks them
        except AddressRefused as exc:
            return Attempt(False, error=str(exc))
    body = body_of(delivery)
    signing = signer(settings.secret_key, webhook.id, webhook.secret_salt)
    headers = signed_headers(signing, delivery, body)
    try:
        # A bound on the whole attempt, reading included, whatever the client's own timeout
        # covers: a receiver that drips its answer must not hold the attempt past its lease.
        async with (
            asyncio.timeout(settings.webhook_timeout_seconds),
            client.post(
                webhook.url, data=body.encode(), headers=headers, allow_redirects=False
            ) as response,
        ):
            head = await _read_at_most(response, RESPONSE_READ_BYTES)
    except aiohttp.ClientError as exc:
        return Attempt(False, error=f"{type(exc).__name__}: {exc}")
    except TimeoutError:
        return Attempt(False, error=f"no answer within {settings.webhook_timeout_seconds} s")
    if 200 <= response.status < 300:
        return Attempt(True, code=response.status)
    text = head.decode(errors="replace").strip()
    return Attempt(False, code=response.status, error=f"HTTP {response.status} {text}")


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes:
    read = b""
    while len(read) < limit:
        chunk = await response.content.read(limit - len(read))
        if not chunk:
            break
        read += chunk
    return read
