"""outbox: unpublished ids in their own table, no published_at rewrite

Revision ID: cb31b69d80e8
Revises: c31cf4d31928
"""
from collections.abc import Sequence

from shared.messaging.schema import add_outbox_unpublished, drop_outbox_unpublished

revision: str = 'cb31b69d80e8'
down_revision: str | None = 'c31cf4d31928'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_outbox_unpublished("logistics")


def downgrade() -> None:
    drop_outbox_unpublished("logistics")
