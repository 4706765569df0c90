"""users' data rights: the erasure audit, and indexes for a user's emails and pushes

Revision ID: 0014_user_erasures
Revises: 0013_email_notifications
Create Date: 2026-12-01 18:00:00

``user_erasures`` is the audit of ``DELETE /api/users/{user_id}/``: who asked (the token's
subject), when, and how many rows of each kind were erased. It holds no personal data but the
user id the tenant named, and nothing erases it. ``ix_emails_tenant_id_user_id`` and
``ix_push_deliveries_tenant_id_user_id`` let the export read, and the erasure find, one user's
emails and pushes as an index range instead of a scan of the tenant's rows.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014_user_erasures"
down_revision: str | None = "0013_email_notifications"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "user_erasures",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("counts", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_user_erasures"),
    )
    op.create_index(
        "ix_user_erasures_tenant_id_user_id", "user_erasures", ["tenant_id", "user_id", "id"]
    )
    op.create_index("ix_emails_tenant_id_user_id", "emails", ["tenant_id", "user_id", "id"])
    op.create_index(
        "ix_push_deliveries_tenant_id_user_id", "push_deliveries", ["tenant_id", "user_id", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_push_deliveries_tenant_id_user_id", table_name="push_deliveries")
    op.drop_index("ix_emails_tenant_id_user_id", table_name="emails")
    op.drop_index("ix_user_erasures_tenant_id_user_id", table_name="user_erasures")
    op.drop_table("user_erasures")
