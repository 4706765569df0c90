"""scheduled events and digest windows

Revision ID: 0012_scheduling
Revises: 0011_message_edits
Create Date: 2026-12-01 18:00:00

``scheduled_events`` holds events (and REST creates) with a future ``send_at`` until a
scheduler applies them (``sent``) or they are ``cancelled``; ``digest_windows`` holds the
open window of each (tenant, user, digest key) until a scheduler closes it and sends its
email. The partial "due" indexes are what the schedulers of every worker poll.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012_scheduling"
down_revision: str | None = "0011_message_edits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "scheduled_events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("document", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduled_events")),
        sa.UniqueConstraint(
            "tenant_id", "event_id", name=op.f("uq_scheduled_events_tenant_id_event_id")
        ),
    )
    op.create_index(
        "ix_scheduled_events_due",
        "scheduled_events",
        ["due_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "digest_windows",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closes_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notification_id", sa.BigInteger(), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("events", JSON, nullable=False),
        sa.Column("email", JSON, nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "user_id", "key", name=op.f("pk_digest_windows")),
    )
    op.create_index(
        "ix_digest_windows_due",
        "digest_windows",
        ["closes_at"],
        unique=False,
        postgresql_where=sa.text("status = 'open'"),
        sqlite_where=sa.text("status = 'open'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_digest_windows_due",
        table_name="digest_windows",
        postgresql_where=sa.text("status = 'open'"),
        sqlite_where=sa.text("status = 'open'"),
    )
    op.drop_table("digest_windows")
    op.drop_index(
        "ix_scheduled_events_due",
        table_name="scheduled_events",
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.drop_table("scheduled_events")
