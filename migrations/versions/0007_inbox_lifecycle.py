"""inbox lifecycle: seen, archived, expiring notifications; unseen counter; tenant settings

Revision ID: 0007_inbox
Revises: 0006_email_schedule
Create Date: 2026-12-01 15:20:00

Reading implies seeing, so rows already read get ``seen_at = read_at`` and every counter's
``unseen_count`` starts equal to its ``unread_count`` (no row is archived yet): both counters
are exact from the first request on. The backfill touches only read rows, once.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_inbox"
down_revision: str | None = "0006_email_schedule"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNSEEN = "seen_at IS NULL AND archived_at IS NULL"
TIMESTAMP = sa.DateTime(timezone=True)


def _partial(name: str, columns: list[str], where: str) -> None:
    op.create_index(
        name,
        "notifications",
        columns,
        postgresql_where=sa.text(where),
        sqlite_where=sa.text(where),
    )


def upgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seen_at", TIMESTAMP, nullable=True))
        batch_op.add_column(sa.Column("archived_at", TIMESTAMP, nullable=True))
        batch_op.add_column(sa.Column("expires_at", TIMESTAMP, nullable=True))
    with op.batch_alter_table("notification_counters", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("unseen_count", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute("UPDATE notifications SET seen_at = read_at WHERE read_at IS NOT NULL")
    op.execute("UPDATE notification_counters SET unseen_count = unread_count")
    _partial("ix_notifications_unseen", ["tenant_id", "user_id", "seq"], UNSEEN)
    _partial(
        "ix_notifications_archived", ["tenant_id", "user_id", "seq"], "archived_at IS NOT NULL"
    )
    _partial(
        "ix_notifications_expiring",
        ["tenant_id", "user_id", "expires_at"],
        "expires_at IS NOT NULL",
    )
    _partial("ix_notifications_expires_at", ["expires_at"], "expires_at IS NOT NULL")
    op.create_index("ix_notifications_created_at", "notifications", ["created_at"])
    op.create_table(
        "tenant_settings",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        sa.Column("chat_retention_days", sa.Integer(), nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_settings")),
    )


def downgrade() -> None:
    op.drop_table("tenant_settings")
    for name in (
        "ix_notifications_created_at",
        "ix_notifications_expires_at",
        "ix_notifications_expiring",
        "ix_notifications_archived",
        "ix_notifications_unseen",
    ):
        op.drop_index(name, table_name="notifications")
    with op.batch_alter_table("notification_counters", schema=None) as batch_op:
        batch_op.drop_column("unseen_count")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
        batch_op.drop_column("archived_at")
        batch_op.drop_column("seen_at")
