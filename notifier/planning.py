"""Which deliveries a batch of history events makes, and what they carry. Pure."""

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from api.schemas import TaskOut
from shared.domain.enums import TaskStatus
from shared.domain.notifications import Channel, DeliveryStatus, encode_payload, event_type
from shared.domain.records import (
    DeliveryRecord,
    StreamEvent,
    TaskRecord,
    UserRecord,
    WebhookRecord,
)

# A webhook and whose tasks it sees: its owner's, or (None) everybody's for an admin's.
Subscription = tuple[WebhookRecord, uuid.UUID | None]


def payload(event: StreamEvent, task: TaskRecord) -> dict[str, Any]:
    """The body of every notification of `event`: the task as the API returns it (the
    same model), as it is when the notification is made, milliseconds after the change."""
    return {
        "type": event_type(TaskStatus(event.to_status)),
        "id": event.id,
        "at": event.at.isoformat(),
        "task": TaskOut.model_validate(task).model_dump(mode="json"),
    }


def plan(
    events: Iterable[StreamEvent],
    subscriptions: list[Subscription],
    recipients: list[UserRecord],
    tasks: Mapping[uuid.UUID, TaskRecord],
) -> list[dict[str, Any]]:
    """One delivery row per (event, subscription that wants it) and (event, owner who
    wants e-mail about it). An event of a task that is gone makes none. Every row has
    both recipient columns: the rows are stored together, a column at a time."""
    rows = []
    for event in events:
        task = tasks.get(event.task_id)
        if task is None:
            continue
        status = TaskStatus(event.to_status)
        body = payload(event, task)
        common = {
            "webhook_id": None,
            "user_id": None,
            "event_id": event.id,
            "task_id": event.task_id,
            "event_type": event_type(status),
            "payload": body,
            "payload_json": encode_payload(body),  # once an event, however many recipients
        }
        for webhook, scope in subscriptions:
            if status in webhook.events and scope in (None, task.owner_id):
                rows.append({**common, "channel": Channel.WEBHOOK.value, "webhook_id": webhook.id})
        for user in recipients:
            if user.id == task.owner_id and status in user.notify_email:
                rows.append({**common, "channel": Channel.EMAIL.value, "user_id": user.id})
    return rows


def wanted_statuses(subscriptions: list[Subscription], recipients: list[UserRecord]) -> set[str]:
    """Statuses anybody is notified about: events of others need no task read at all."""
    found = {status.value for webhook, _ in subscriptions for status in webhook.events}
    return found | {status.value for user in recipients for status in user.notify_email}


def line_up(
    rows: list[dict[str, Any]],
    *,
    now: datetime,
    per_batch: int,
    batches: int,
    bound_s: float,
    start_s: float,
) -> list[DeliveryRecord]:
    """Make the first `per_batch * batches` of `rows` attempts under way as they are
    stored, so that the notifier making them attempts them at once, without claiming
    them back from the outbox: they are sent in batches of `per_batch`, one after the
    other, each batch within `bound_s`, the first within `start_s` of `now`. Each row's
    lease covers its own batch and those before it: if the notifier dies with them, another
    takes them over then, same id. The rest stay pending, for any notifier to claim. Gives
    every row its id; returns the records of those lined up."""
    lined_up = []
    for index, row in enumerate(rows):
        row.update(
            id=uuid.uuid4(),
            status=DeliveryStatus.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            leased_until=None,
            first_attempt_at=None,
            last_attempt_at=None,
        )
        batch = index // per_batch
        if batch >= batches:
            continue
        lease_end = now + timedelta(seconds=start_s + bound_s * (batch + 1))
        # Not due before its lease ends: the outbox's scan for due rows passes it by.
        row.update(
            attempts=1,
            next_attempt_at=lease_end,
            leased_until=lease_end,
            first_attempt_at=now,
            last_attempt_at=now,
        )
        lined_up.append(
            DeliveryRecord(
                **row,
                last_response_code=None,
                last_error=None,
                created_at=now,
                delivered_at=None,
            )
        )
    return lined_up
