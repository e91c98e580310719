"""What a batch's outcomes do to its subscriptions' counts of failures in a row. Pure."""

import uuid

from shared.db.deliveries import Outcome
from shared.domain.notifications import DeliveryStatus


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
