"""message edits and tombstones, and a tenant's edit window

Revision ID: 0011_message_edits
Revises: 0010_preferences
Create Date: 2026-12-01 15:30:00

``edited_at`` is set by each edit; ``deleted_at`` marks a tombstone (its ``body`` emptied in
the same statement, so a deleted text is gone from the database, not only hidden).
``tenant_settings.chat_edit_window_seconds`` is how long a tenant's senders may edit a message
(null: the hub's NOTIFYHUB_CHAT_EDIT_WINDOW_SECONDS).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_message_edits"
down_revision: str | None = "0010_preferences"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("tenant_settings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chat_edit_window_seconds", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenant_settings", schema=None) as batch_op:
        batch_op.drop_column("chat_edit_window_seconds")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("deleted_at")
        batch_op.drop_column("edited_at")
