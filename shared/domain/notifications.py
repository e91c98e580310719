"""Notifications when a task's status changes: what is sent, when a failed delivery is tried
again, and how a webhook's signing secret is made. Pure functions."""

import base64
import hashlib
import hmac
import json
import random
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from enum import StrEnum
from typing import Any

from shared.domain.enums import TaskStatus

SECRET_PREFIX = "whsec_"
# A small fraction of each pause, so that deliveries failing together spread out again.
JITTER = 0.1


class Channel(StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its first attempt or its next one
    DELIVERED = "delivered"  # the receiver answered 2xx, or the mail server took it
    FAILED = "failed"  # no attempt succeeded before the notifier gave up


def event_type(status: TaskStatus) -> str:
    """`task.completed` for COMPLETED, and so on."""
    return f"task.{status.value.lower()}"


def encode_payload(payload: Mapping[str, Any]) -> str:
    """A notification's JSON, as stored and as sent: compact, keys sorted, the same
    encoding on every attempt of a delivery (a retry encodes what JSONB gave back)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)


def signing_secret(secret_key: str, webhook_id: uuid.UUID, salt: bytes) -> str:
    """A webhook's Standard Webhooks secret (`whsec_` + base64 of 32 bytes), derived from
    the service's SECRET_KEY: the database holds only the salt, useless without the key."""
    raw = hmac.new(secret_key.encode(), webhook_id.bytes + salt, hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(raw).decode()


def retry_delay(
    attempts: int,
    *,
    since_first_s: float,
    schedule_s: Sequence[float],
    repeat_s: float,
    give_up_s: float,
    rng: random.Random | None = None,
) -> timedelta | None:
    """How long to wait after the `attempts`-th failed attempt; None: give up.

    The schedule's pauses first (5 s, 30 s, 2 min, 10 min, 1 h by default), then one every
    `repeat_s`, until `give_up_s` after the first attempt.
    """
    pause = schedule_s[attempts - 1] if attempts <= len(schedule_s) else repeat_s
    pause *= 1 + (rng or random).uniform(-JITTER, JITTER)
    if since_first_s + pause > give_up_s:
        return None
    return timedelta(seconds=pause)
