"""Leases, retries and timeouts: what crash recovery and the relay need.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Server defaults keep the ALTERs instant (no table rewrite) on a big table.
    op.add_column(
        "tasks", sa.Column("max_retries", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column(
        "tasks", sa.Column("timeout_seconds", sa.Integer(), server_default="900", nullable=False)
    )
    op.add_column(
        "tasks", sa.Column("lost_attempts", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("tasks", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint("ck_tasks_max_retries", "tasks", "max_retries BETWEEN 0 AND 10")
    op.create_check_constraint("ck_tasks_timeout_seconds", "tasks", "timeout_seconds > 0")
    op.create_index(
        "ix_tasks_new_created_at",
        "tasks",
        ["created_at"],
        postgresql_where=sa.text("status = 'NEW'"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_new_created_at", table_name="tasks")
    op.drop_constraint("ck_tasks_timeout_seconds", "tasks", type_="check")
    op.drop_constraint("ck_tasks_max_retries", "tasks", type_="check")
    for column in ("lease_expires_at", "lost_attempts", "timeout_seconds", "max_retries"):
        op.drop_column("tasks", column)
