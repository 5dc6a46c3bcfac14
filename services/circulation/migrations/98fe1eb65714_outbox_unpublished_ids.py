"""outbox: unpublished ids in their own table, no published_at rewrite

Revision ID: 98fe1eb65714
Revises: 72f6d5d196ba
"""
from collections.abc import Sequence

from shared.messaging.schema import add_outbox_unpublished, drop_outbox_unpublished

revision: str = '98fe1eb65714'
down_revision: str | None = '72f6d5d196ba'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_outbox_unpublished("circulation")


def downgrade() -> None:
    drop_outbox_unpublished("circulation")
