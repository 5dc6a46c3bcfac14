"""outbox retention (published_at) and parked records

Revision ID: a3e262783337
Revises: 789f1aae39c3
"""
from collections.abc import Sequence

from shared.messaging.schema import add_retention_and_parking, drop_retention_and_parking

revision: str = 'a3e262783337'
down_revision: str | None = '789f1aae39c3'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_retention_and_parking("acquisition")


def downgrade() -> None:
    drop_retention_and_parking("acquisition")
