"""the notification an email goes with

Revision ID: 0013_email_notifications
Revises: 0012_scheduling
Create Date: 2026-12-01 19:00:00

``emails.notification_id`` links an event's email to the notification the same event made
for the same recipient (and a digest's email to its window's notification), so that
``GET /api/notifications/{id}/deliveries/`` lists the email with the pushes. Null for a plain
``POST /api/emails/send/`` and for emails stored before this revision.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_email_notifications"
down_revision: str | None = "0012_scheduling"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notification_id", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_emails_tenant_id_notification_id",
        "emails",
        ["tenant_id", "notification_id"],
        postgresql_where=sa.text("notification_id IS NOT NULL"),
        sqlite_where=sa.text("notification_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_emails_tenant_id_notification_id", table_name="emails")
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.drop_column("notification_id")
