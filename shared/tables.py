"""The database schema, as SQLAlchemy Core tables. Alembic migrations must match it exactly."""

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.enums import TaskPriority, TaskStatus

TITLE_MAX_CHARS = 200
DESCRIPTION_MAX_CHARS = 10_000
KIND_MAX_CHARS = 64
MAX_RETRIES = 10

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _one_of(column: str, values: list[str]) -> str:
    listed = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({listed})"


tasks = Table(
    "tasks",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
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
