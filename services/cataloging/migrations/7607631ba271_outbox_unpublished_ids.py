"""outbox: unpublished ids in their own table, no published_at rewrite

Revision ID: 7607631ba271
Revises: f1c2a9d04b37
"""
from collections.abc import Sequence

from shared.messaging.schema import add_outbox_unpublished, drop_outbox_unpublished

revision: str = '7607631ba271'
down_revision: str | None = 'f1c2a9d04b37'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_outbox_unpublished("cataloging")


def downgrade() -> None:
    drop_outbox_unpublished("cataloging")
