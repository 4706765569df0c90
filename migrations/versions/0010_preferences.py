"""notification preferences: users' own, tenants' defaults; emails know recipient and category

Revision ID: 0010_preferences
Revises: 0009_webhooks
Create Date: 2026-12-01 15:20:00

``user_preferences`` and ``tenant_preferences`` hold JSON documents (see hub/preferences.py),
one row per user and per tenant, keyed by their ids: event intake reads those of a whole
batch in two statements. ``emails.user_id`` and ``emails.category`` let the email task check
the recipient's preferences again right before sending (they may have changed since the
email was queued) and build the unsubscribe link; both are null for emails queued without
a recipient user. ``notification_requests.suppressed_user_ids`` keeps whom a create request
left out, so that a repeated idempotency key answers the same ``suppressed``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010_preferences"
down_revision: str | None = "0009_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _document_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("channels", JSON, nullable=False),
        sa.Column("categories", JSON, nullable=False),
        sa.Column("quiet_hours", JSON, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "user_preferences",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        *_document_columns(),
        sa.PrimaryKeyConstraint("tenant_id", "user_id", name=op.f("pk_user_preferences")),
    )
    op.create_table(
        "tenant_preferences",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        *_document_columns(),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_preferences")),
    )
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_id", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("category", sa.String(length=64), nullable=True))
    with op.batch_alter_table("notification_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("suppressed_user_ids", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notification_requests", schema=None) as batch_op:
        batch_op.drop_column("suppressed_user_ids")
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.drop_column("category")
        batch_op.drop_column("user_id")
    op.drop_table("tenant_preferences")
    op.drop_table("user_preferences")
