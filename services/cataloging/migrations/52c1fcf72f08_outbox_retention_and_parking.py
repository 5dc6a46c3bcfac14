"""outbox retention (published_at) and parked records

Revision ID: 52c1fcf72f08
Revises: a27dacbbc9af
"""
from collections.abc import Sequence

from shared.messaging.schema import add_retention_and_parking, drop_retention_and_parking

revision: str = '52c1fcf72f08'
down_revision: str | None = 'a27dacbbc9af'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_retention_and_parking("cataloging")


def downgrade() -> None:
    drop_retention_and_parking("cataloging")
