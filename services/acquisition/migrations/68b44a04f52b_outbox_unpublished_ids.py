"""outbox: unpublished ids in their own table, no published_at rewrite

Revision ID: 68b44a04f52b
Revises: 181a1fe6f886
"""
from collections.abc import Sequence

from shared.messaging.schema import add_outbox_unpublished, drop_outbox_unpublished

revision: str = '68b44a04f52b'
down_revision: str | None = '181a1fe6f886'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_outbox_unpublished("acquisition")


def downgrade() -> None:
    drop_outbox_unpublished("acquisition")
