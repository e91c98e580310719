"""The notifier's pure policies: which deliveries a fan-out attempts itself, and what a
batch's outcomes count as failures in a row."""

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from notifier.accounting import ended_per_webhook
from notifier.planning import line_up
from notifier.webhooks import body_of
from shared.db.deliveries import Outcome
from shared.domain.notifications import DeliveryStatus, encode_payload
from shared.domain.records import DeliveryRecord

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
HOOK = uuid.uuid4()


def planned(count: int) -> list[dict[str, Any]]:
    """Rows as `planning.plan` makes them: one webhook delivery per event."""
    return [
        {
            "webhook_id": HOOK,
            "user_id": None,
            "event_id": n,
            "task_id": uuid.uuid4(),
            "event_type": "task.completed",
            "payload": {"id": n},
            "channel": "webhook",
        }
        for n in range(count)
    ]


def outcome(status: DeliveryStatus) -> Outcome:
    [delivery] = line_up(planned(1), now=NOW, per_batch=1, batches=1, bound_s=15, start_s=1)
    return Outcome(delivery, status)


def test_a_fan_out_lines_up_its_first_batches_each_leased_until_its_batch_may_have_ended() -> None:
    rows = planned(7)

    lined_up = line_up(rows, now=NOW, per_batch=2, batches=3, bound_s=15, start_s=1)

    assert [d.id for d in lined_up] == [row["id"] for row in rows[:6]]
    leases = [d.leased_until for d in lined_up]
    assert leases == [NOW + timedelta(seconds=1 + 15 * (1 + n // 2)) for n in range(6)]
    assert all(isinstance(d, DeliveryRecord) and d.attempts == 1 for d in lined_up)
    assert all(d.first_attempt_at == d.last_attempt_at == NOW for d in lined_up)
    # Not due before its lease runs out: no other notifier's claim passes over it first.
    assert all(row["next_attempt_at"] == row["leased_until"] for row in rows[:6])


def test_what_a_fan_out_does_not_line_up_is_pending_and_due_for_any_notifier() -> None:
    rows = planned(7)

    line_up(rows, now=NOW, per_batch=2, batches=3, bound_s=15, start_s=1)

    [rest] = rows[6:]
    assert rest["attempts"] == 0 and rest["leased_until"] is None
    assert rest["next_attempt_at"] == NOW and rest["status"] == DeliveryStatus.PENDING.value
    assert len({row["id"] for row in rows}) == 7


def test_a_failure_counts_only_after_the_last_delivery_of_its_subscription() -> None:
    order = ("failed", "delivered", "failed", "pending", "failed")
    outcomes = [outcome(DeliveryStatus(status)) for status in order]
    settled = {o.delivery.id for o in outcomes}

    assert ended_per_webhook(outcomes, settled) == {HOOK: (True, 2)}
    assert ended_per_webhook(outcomes, set()) == {}


def test_a_first_attempt_sends_the_text_stored_and_a_retry_read_back_the_same_bytes() -> None:
    rows = planned(1)
    rows[0]["payload"] = {"type": "task.completed", "task": {"title": "é", "result": {"n": 1.5}}}
    rows[0]["payload_json"] = encode_payload(rows[0]["payload"])
    [first] = line_up(rows, now=NOW, per_batch=1, batches=1, bound_s=15, start_s=1)

    # What the database gives back for a retry: the stored JSON decoded, nothing encoded.
    retry = dataclasses.replace(
        first, payload=json.loads(rows[0]["payload_json"]), payload_json=None
    )

    assert body_of(first) is rows[0]["payload_json"]  # as stored, not encoded again
    assert body_of(retry) == body_of(first)
