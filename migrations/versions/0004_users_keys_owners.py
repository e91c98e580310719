"""Users, API keys, and an owner for every task.

Tasks stored before this migration belong to a `legacy` user, which is disabled (it can
never sign in); admins see its tasks like any other.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEGACY_USER_ID = "00000000-0000-4000-8000-000000000000"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("char_length(name) BETWEEN 1 AND 100", name="ck_users_name_length"),
        sa.CheckConstraint("role IN ('admin', 'member')", name="ck_users_role"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_api_keys_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("digest", name="uq_api_keys_digest"),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.execute(
        "INSERT INTO users (id, name, role, disabled_at) "
        f"VALUES ('{LEGACY_USER_ID}', 'legacy', 'member', now())"
    )
    # A default makes adding the NOT NULL column instant on a big table; it is dropped at once.
    op.add_column(
        "tasks",
        sa.Column(
            "owner_id", sa.Uuid(), server_default=sa.text(f"'{LEGACY_USER_ID}'"), nullable=False
        ),
    )
    op.alter_column("tasks", "owner_id", server_default=None)
    op.create_foreign_key("fk_tasks_owner_id_users", "tasks", "users", ["owner_id"], ["id"])
    op.create_index(
        "ix_tasks_owner_id_created_at_id",
        "tasks",
        ["owner_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.add_column("task_events", sa.Column("user_id", sa.Uuid(), nullable=True))
    _recount(by_owner=True)


def downgrade() -> None:
    _recount(by_owner=False)
    op.drop_column("task_events", "user_id")
    op.drop_index("ix_tasks_owner_id_created_at_id", table_name="tasks")
    op.drop_constraint("fk_tasks_owner_id_users", "tasks", type_="foreignkey")
    op.drop_column("tasks", "owner_id")
    op.drop_table("api_keys")
    op.drop_table("users")


def _recount(*, by_owner: bool) -> None:
    """Rebuild task_counts with or without the owner in its key, from the tasks."""
    op.drop_table("task_counts")
    owner = [sa.Column("owner_id", sa.Uuid(), nullable=False)] if by_owner else []
    op.create_table(
        "task_counts",
        *owner,
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            *(["owner_id"] if by_owner else []),
            "status",
            "priority",
            "shard",
            name="pk_task_counts",
        ),
    )
    columns = "owner_id, status, priority" if by_owner else "status, priority"
    op.execute(
        f"INSERT INTO task_counts ({columns}, shard, n) "
        f"SELECT {columns}, 0, count(*) FROM tasks GROUP BY {columns}"
    )
