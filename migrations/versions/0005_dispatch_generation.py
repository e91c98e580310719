"""Dispatch generations: which message of a task may start it, after a re-prioritisation.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A server default keeps the ALTER instant (no table rewrite) on a big table.
    op.add_column(
        "tasks",
        sa.Column("dispatch_generation", sa.Integer(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("tasks", "dispatch_generation")
