"""The event stream's order (the writing transaction of each history row), dashboard
sessions, and the dashboard's title search.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, default set afterwards: both instant, no rewrite of a big history table.
    # Rows already there keep a null, and come before every streamed event.
    op.execute("ALTER TABLE task_events ADD COLUMN xact_id xid8")
    op.execute("ALTER TABLE task_events ALTER COLUMN xact_id SET DEFAULT pg_current_xact_id()")
    # CONCURRENTLY: building an index on a big table must not block writes meanwhile.
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_task_events_xact_id_id",
            "task_events",
            ["xact_id", "id"],
            postgresql_where=sa.text("xact_id IS NOT NULL"),
            postgresql_concurrently=True,
        )
        op.create_index(
            "ix_tasks_title_pattern",
            "tasks",
            ["title"],
            postgresql_ops={"title": "text_pattern_ops"},
            postgresql_concurrently=True,
        )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("key_id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name="fk_sessions_key_id_api_keys",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        sa.UniqueConstraint("digest", name="uq_sessions_digest"),
    )
    op.create_index("ix_sessions_key_id", "sessions", ["key_id"])


def downgrade() -> None:
    op.drop_index("ix_sessions_key_id", table_name="sessions")
    op.drop_table("sessions")
    op.drop_index("ix_tasks_title_pattern", table_name="tasks")
    op.drop_index("ix_task_events_xact_id_id", table_name="task_events")
    op.drop_column("task_events", "xact_id")
