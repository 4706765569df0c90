"""email retry schedule: when a non-final email is next due

Revision ID: 0006_email_schedule
Revises: 0005
Create Date: 2026-12-01 12:40:00

Retries wait in the database, not in a sleeping task: ``next_attempt_at`` says when the
sweeper of ``notifyhub worker`` (or of ``serve`` on the embedded profile) takes a
``queued``, ``retrying`` or stale ``sending`` email. The partial index holds only those rows,
so the sweeper's query stays small however many emails were sent.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_email_schedule"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = "status IN ('queued', 'sending', 'retrying')"


def upgrade() -> None:
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
    # Emails already waiting become due when their lease (retry time) ends, or at once.
    op.execute(
        "UPDATE emails SET next_attempt_at = COALESCE(lease_until, updated_at) "
        "WHERE status IN ('queued', 'sending', 'retrying')"
    )
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.create_index(
            "ix_emails_due",
            ["next_attempt_at"],
            unique=False,
            postgresql_where=sa.text(PENDING),
            sqlite_where=sa.text(PENDING),
        )


def downgrade() -> None:
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.drop_index("ix_emails_due")
        batch_op.drop_column("next_attempt_at")
