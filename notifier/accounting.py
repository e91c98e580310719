"""What a batch's outcomes do to its subscriptions' counts of failures in a row. Pure."""

import uuid

from shared.db.deliveries import Outcome
from shared.domain.notifications import DeliveryStatus
from shared.domain.records import WebhookRecord


def ended_per_webhook(
    outcomes: list[Outcome], settled: set[uuid.UUID]
) -> dict[uuid.UUID, tuple[bool, int]]:
    """Per webhook, of its deliveries that ended here: whether one was delivered, and how
    many failed after the last one delivered (those continue the count in a row)."""
    ended: dict[uuid.UUID, tuple[bool, int]] = {}
    for outcome in outcomes:
        webhook_id = outcome.delivery.webhook_id
        if webhook_id is None or outcome.delivery.id not in settled:
            continue
        reset, failures = ended.get(webhook_id, (False, 0))
        if outcome.status is DeliveryStatus.DELIVERED:
            ended[webhook_id] = (True, 0)
        elif outcome.status is DeliveryStatus.FAILED:
            ended[webhook_id] = (reset, failures + 1)
    return ended


def counts_move(
    ended: dict[uuid.UUID, tuple[bool, int]], hooks: dict[uuid.UUID, WebhookRecord]
) -> bool:
    """Whether recording these outcomes may change a subscription's failure count: a
    failure, or a delivery to one whose count (as read for this batch) was not 0. Another
    notifier's failure counted since that read stays counted until the next delivery."""
    for webhook_id, (_, failures) in ended.items():
        known = hooks.get(webhook_id)
        if failures or known is None or known.consecutive_failures:
            return True
    return False
