"""The database schema, as SQLAlchemy Core tables. Alembic migrations must match it exactly."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql.base import ischema_names
from sqlalchemy.types import UserDefinedType

from shared.domain.enums import Role, TaskPriority, TaskStatus

TITLE_MAX_CHARS = 200
DESCRIPTION_MAX_CHARS = 10_000
KIND_MAX_CHARS = 64
MAX_RETRIES = 10
WORKER_ID_MAX_CHARS = 200
REASON_MAX_CHARS = 200
# Counters per (status, priority) are spread over this many rows, picked by task id, so
# concurrent transitions rarely wait for each other on one hot row.
COUNT_SHARDS = 16

USER_NAME_MAX_CHARS = 100
EMAIL_MAX_CHARS = 254
KEY_NAME_MAX_CHARS = 100
# The owner of the tasks that existed before users did (migration 0004); it cannot sign in.
LEGACY_USER_ID = "00000000-0000-4000-8000-000000000000"

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class Xid8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id: which transaction wrote a history row."""

    cache_ok = True

    def get_col_spec(self, **kw: object) -> str:
        return "XID8"


# So that reflection (alembic check) knows the type instead of warning about it.
ischema_names["xid8"] = Xid8


def _one_of(column: str, values: list[str]) -> str:
    listed = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({listed})"


users = Table(
    "users",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("name", String(USER_NAME_MAX_CHARS), nullable=False, unique=True),
    Column("email", String(EMAIL_MAX_CHARS), nullable=True),
    Column("role", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
    # The statuses of their tasks this user is e-mailed about; empty: none.
    Column("notify_email", ARRAY(String(16)), nullable=False, server_default=text("'{}'")),
    CheckConstraint(f"char_length(name) BETWEEN 1 AND {USER_NAME_MAX_CHARS}", name="name_length"),
    CheckConstraint(_one_of("role", [r.value for r in Role]), name="role"),
)

# A key is stored as its SHA-256 digest, never in clear; `prefix` lets a person tell keys
# apart in listings. Lookups go by digest (unique), so no lookup depends on the prefix.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(KEY_NAME_MAX_CHARS), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("digest", LargeBinary(32), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)
Index("ix_api_keys_user_id", api_keys.c.user_id)

tasks = Table(
    "tasks",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("owner_id", Uuid, ForeignKey("users.id"), nullable=False),
    Column("title", String(TITLE_MAX_CHARS), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("priority", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("kind", String(KIND_MAX_CHARS), nullable=False),
    Column("params", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("result", JSONB, nullable=True),
    Column("error", Text, nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("cancel_requested", Boolean, nullable=False, server_default="false"),
    Column("max_retries", Integer, nullable=False, server_default="0"),
    Column("timeout_seconds", Integer, nullable=False, server_default="900"),
    Column("lost_attempts", Integer, nullable=False, server_default="0"),
    Column("lease_expires_at", DateTime(timezone=True), nullable=True),
    # Which dispatch of the task is current: its message carries it, and a claim by any
    # other (stale) message is refused. Bumped when a queued task is re-prioritised.
    Column("dispatch_generation", Integer, nullable=False, server_default="0"),
    # The worker running (or that last ran) the task: what GET /workers lists as running.
    Column("worker_id", String(WORKER_ID_MAX_CHARS), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    CheckConstraint(f"char_length(title) BETWEEN 1 AND {TITLE_MAX_CHARS}", name="title_length"),
    CheckConstraint(
        f"char_length(description) <= {DESCRIPTION_MAX_CHARS}", name="description_length"
    ),
    CheckConstraint(_one_of("priority", [p.value for p in TaskPriority]), name="priority"),
    CheckConstraint(_one_of("status", [s.value for s in TaskStatus]), name="status"),
    CheckConstraint("attempts >= 0", name="attempts"),
    CheckConstraint(f"max_retries BETWEEN 0 AND {MAX_RETRIES}", name="max_retries"),
    CheckConstraint("timeout_seconds > 0", name="timeout_seconds"),
)

# The list endpoint pages newest first (created_at DESC, id DESC), optionally filtered by
# status and/or priority: one index per access path keeps every page an index scan.
Index("ix_tasks_created_at_id", tasks.c.created_at.desc(), tasks.c.id.desc())
Index("ix_tasks_status_created_at_id", tasks.c.status, tasks.c.created_at.desc(), tasks.c.id.desc())
# The relay's scan for tasks whose message is not in the queue: few rows, found at once.
Index(
    "ix_tasks_new_created_at",
    tasks.c.created_at,
    postgresql_where=tasks.c.status == TaskStatus.NEW.value,
)
Index(
    "ix_tasks_priority_created_at_id",
    tasks.c.priority,
    tasks.c.created_at.desc(),
    tasks.c.id.desc(),
)
# A member's own list, newest first.
Index(
    "ix_tasks_owner_id_created_at_id",
    tasks.c.owner_id,
    tasks.c.created_at.desc(),
    tasks.c.id.desc(),
)
# The dashboard's search by title prefix (LIKE 'prefix%' needs the C ordering of text_pattern_ops).
Index("ix_tasks_title_pattern", tasks.c.title, postgresql_ops={"title": "text_pattern_ops"})
# Running tasks by lease end: the reaper's scan, and which tasks each worker runs.
Index(
    "ix_tasks_in_progress_lease_expires_at",
    tasks.c.lease_expires_at,
    postgresql_where=tasks.c.status == TaskStatus.IN_PROGRESS.value,
)

# One row per creation and per transition, written by the same statement as the change.
# No foreign key: the row is only ever written next to its task, and a key check would
# cost an extra lookup on every transition (the hot path).
task_events = Table(
    "task_events",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("task_id", Uuid, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("from_status", String(16), nullable=True),  # null: the task was created
    Column("to_status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("worker_id", String(WORKER_ID_MAX_CHARS), nullable=True),  # null: the API moved it
    Column("reason", String(REASON_MAX_CHARS), nullable=True),
    # The user whose API request made the change (an admin acting on another's task shows).
    Column("user_id", Uuid, nullable=True),
    # The writing transaction. Ids from the sequence become visible in commit order, not id
    # order; the event stream sends rows in (xact_id, id) order, and only those of
    # transactions older than every running one, so it can never skip a row that commits
    # late. Null: written before this column existed (migration 0006), before every stream.
    Column("xact_id", Xid8, nullable=True, server_default=text("pg_current_xact_id()")),
)
Index("ix_task_events_task_id_id", task_events.c.task_id, task_events.c.id)
Index(
    "ix_task_events_xact_id_id",
    task_events.c.xact_id,
    task_events.c.id,
    postgresql_where=task_events.c.xact_id.is_not(None),
)
# Time-window statistics read recent events; rows arrive in time order, so a BRIN index
# (a few pages, next to free to maintain) finds them.
Index("ix_task_events_at", task_events.c.at, postgresql_using="brin")

# Exact task counts per owner, status and priority, kept by the transitions themselves: a
# count(*) over a million rows takes longer than the stats endpoints may.
task_counts = Table(
    "task_counts",
    metadata,
    Column("owner_id", Uuid, nullable=False),
    Column("status", String(16), nullable=False),
    Column("priority", String(16), nullable=False),
    Column("shard", SmallInteger, nullable=False),
    Column("n", BigInteger, nullable=False),
    PrimaryKeyConstraint("owner_id", "status", "priority", "shard"),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(WORKER_ID_MAX_CHARS), primary_key=True),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("queue", String(200), nullable=False),
    Column("prefetch", Integer, nullable=False),
    # The worker's own heartbeat period: three missed ones make it offline.
    Column("heartbeat_seconds", Float, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_seen_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("stopped_at", DateTime(timezone=True), nullable=True),
    Column("processed", BigInteger, nullable=False, server_default="0"),
    Column("failed", BigInteger, nullable=False, server_default="0"),
)

# Dashboard sign-ins: an API key exchanged for a cookie. Only the token's SHA-256 digest is
# stored; a session ends at sign-out, at expiry, or when its key is revoked or its user
# disabled (both checked on every lookup).
sessions = Table(
    "sessions",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("digest", LargeBinary(32), nullable=False, unique=True),
    Column("key_id", Uuid, ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=True),
)
Index("ix_sessions_key_id", sessions.c.key_id)

URL_MAX_CHARS = 2000
DESCRIPTION_SHORT_MAX_CHARS = 500
ERROR_MAX_CHARS = 500

# Webhook subscriptions. The signing secret is derived from SECRET_KEY and `secret_salt`
# (shared.domain.notifications.signing_secret): the database alone cannot sign.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("owner_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("url", String(URL_MAX_CHARS), nullable=False),
    Column("events", ARRAY(String(16)), nullable=False),
    Column("description", String(DESCRIPTION_SHORT_MAX_CHARS), nullable=False, server_default=""),
    Column("secret_salt", LargeBinary(16), nullable=False),
    Column("enabled", Boolean, nullable=False, server_default="true"),
    Column("disabled_reason", String(REASON_MAX_CHARS), nullable=True),
    # Deliveries in a row that ended failed; WEBHOOK_DISABLE_AFTER_FAILURES disables it.
    Column("consecutive_failures", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Index("ix_webhooks_owner_id", webhooks.c.owner_id)

# The notification outbox: one row per (event, webhook or user), made by the notifier from
# the history and attempted until delivered or given up. Its id is the `webhook-id` header
# (and the e-mail's Message-ID): the same on every retry.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("channel", String(16), nullable=False),
    Column("webhook_id", Uuid, ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=True),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    Column("event_id", BigInteger, nullable=False),
    Column("task_id", Uuid, nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # While an attempt runs or waits its turn in the notifier that holds it: a notifier
    # that dies leaves it to run out.
    Column("leased_until", DateTime(timezone=True), nullable=True),
    Column("first_attempt_at", DateTime(timezone=True), nullable=True),
    Column("last_attempt_at", DateTime(timezone=True), nullable=True),
    Column("last_response_code", Integer, nullable=True),
    Column("last_error", String(ERROR_MAX_CHARS), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    # Room on each page for a claim's new row version: a HOT update (migration 0008).
    postgresql_with={"fillfactor": 50},
)
# The notifier's scan for what is due: pending rows only, by when.
Index(
    "ix_deliveries_pending_next_attempt_at",
    deliveries.c.next_attempt_at,
    postgresql_where=deliveries.c.status == "pending",
)
Index("ix_deliveries_webhook_id_created_at", deliveries.c.webhook_id, deliveries.c.created_at)

# Where the notifier stands in the history: one row, advanced in the transaction that
# makes the deliveries of the events it passes, so each event is notified once.
notifier_cursor = Table(
    "notifier_cursor",
    metadata,
    Column("id", SmallInteger, primary_key=True),
    Column("xact_id", Xid8, nullable=False),
    Column("event_id", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)
