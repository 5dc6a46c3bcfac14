"""outbox retention (published_at) and parked records

Revision ID: 48145745f77f
Revises: 1f25ed15df1f
"""
from collections.abc import Sequence

from shared.messaging.schema import add_retention_and_parking, drop_retention_and_parking

revision: str = '48145745f77f'
down_revision: str | None = '1f25ed15df1f'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_retention_and_parking("circulation")


def downgrade() -> None:
    drop_retention_and_parking("circulation")
