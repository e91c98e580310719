"""One webhook attempt: refuse private addresses, sign (Standard Webhooks), POST once."""

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from standardwebhooks.webhooks import Webhook

from shared import __version__
from shared.domain.errors import AddressRefused
from shared.domain.notifications import signing_secret
from shared.domain.records import DeliveryRecord, WebhookRecord
from shared.services.webhook_targets import check_address
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
    return json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True)


def signed_headers(secret: str, delivery: DeliveryRecord, body: str) -> dict[str, str]:
    now = datetime.now(UTC)
    msg_id = message_id(delivery)
    return {
        "content-type": "application/json",
        "user-agent": f"taskq-webhooks/{__version__}",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
    }


async def attempt(
    client: httpx.AsyncClient, webhook: WebhookRecord, delivery: DeliveryRecord, settings: Settings
) -> Attempt:
    """POST the delivery once: 2xx is delivered, anything else (or no answer) is not."""
    try:
        await check_address(webhook.url, allow_private=settings.webhook_allow_private_networks)
    except AddressRefused as exc:
        return Attempt(False, error=str(exc))
    secret = signing_secret(settings.secret_key, webhook.id, webhook.secret_salt)
    body = body_of(delivery)
    headers = signed_headers(secret, delivery, body)
    try:
        # A bound on the whole attempt: httpx's timeout is per read, and a receiver that
        # drips its answer could otherwise hold the attempt past its lease.
        async with (
            asyncio.timeout(settings.webhook_timeout_seconds),
            client.stream("POST", webhook.url, content=body, headers=headers) as response,
        ):
            head = await _read_at_most(response, RESPONSE_READ_BYTES)
    except httpx.HTTPError as exc:
        return Attempt(False, error=f"{type(exc).__name__}: {exc}")
    except TimeoutError:
        return Attempt(False, error=f"no answer within {settings.webhook_timeout_seconds} s")
    if 200 <= response.status_code < 300:
        return Attempt(True, code=response.status_code)
    text = head.decode(errors="replace").strip()
    return Attempt(False, code=response.status_code, error=f"HTTP {response.status_code} {text}")


async def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    read = b""
    async for chunk in response.aiter_raw():
        read += chunk
        if len(read) >= limit:
            break
    return read[:limit]
