"""Room on each page of the deliveries outbox, so a claim is a HOT update.

A claim changes no indexed column (only the lease and the attempt counts), so PostgreSQL
can write its new row version on the same page without new index entries, if the page
has room. Inserted at the default fillfactor (100) the pages are full, and every claim
adds an entry to each of the table's three indexes.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FILLFACTOR = 50


def upgrade() -> None:
    op.execute(f"ALTER TABLE deliveries SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    op.execute("ALTER TABLE deliveries RESET (fillfactor)")
