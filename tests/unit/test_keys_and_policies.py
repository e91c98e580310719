"""Pure pieces of identity and the registry: key shape, redaction, worker states."""

import logging
import uuid
from datetime import UTC, datetime, timedelta

from shared.domain import keys
from shared.domain.enums import Role, WorkerState
from shared.domain.records import Principal
from shared.domain.workers import worker_state
from shared.logs import RedactKeys


def test_keys_are_long_random_recognisable_and_stored_only_as_a_digest() -> None:
    first, second = keys.new_key(), keys.new_key()

    assert first != second and first.startswith("tq_") and len(first) == 46
    assert keys.looks_like_key(first)
    assert len(keys.digest(first)) == 32 and keys.digest(first) != keys.digest(second)
    assert first.encode() not in keys.digest(first)
    assert keys.shown_prefix(first) == first[:11]
    assert not keys.looks_like_key("Bearer tq_x") and not keys.looks_like_key("tq_short")


def test_anything_shaped_like_a_key_is_redacted_from_log_lines() -> None:
    key = keys.new_key()
    record = logging.LogRecord("x", logging.INFO, "f", 1, "GET %s %d", (f"/t?key={key}", 200), None)

    assert RedactKeys().filter(record)

    assert record.getMessage() == "GET /t?key=tq_[redacted] 200"


def test_a_worker_is_online_until_three_beats_are_missed_and_stopped_once_it_says_so() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)

    def state(seen_ago_s: float, stopped: bool = False) -> WorkerState:
        return worker_state(
            stopped_at=now if stopped else None,
            last_seen_at=now - timedelta(seconds=seen_ago_s),
            heartbeat_s=2,
            now=now,
        )

    assert state(5.9) is WorkerState.ONLINE
    assert state(6.1) is WorkerState.OFFLINE
    assert state(0, stopped=True) is WorkerState.STOPPED


def test_a_member_is_scoped_to_their_own_tasks_an_admin_to_none() -> None:
    user = uuid.uuid4()
    member = Principal(user_id=user, name="m", role=Role.MEMBER, key_id=uuid.uuid4())
    admin = Principal(user_id=user, name="a", role=Role.ADMIN, key_id=uuid.uuid4())

    assert member.owner_scope == user
    assert admin.owner_scope is None
