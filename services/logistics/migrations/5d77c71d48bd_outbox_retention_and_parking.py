"""outbox retention (published_at) and parked records

Revision ID: 5d77c71d48bd
Revises: d1e41db54b3f
"""
from collections.abc import Sequence

from shared.messaging.schema import add_retention_and_parking, drop_retention_and_parking

revision: str = '5d77c71d48bd'
down_revision: str | None = 'd1e41db54b3f'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_retention_and_parking("logistics")


def downgrade() -> None:
    drop_retention_and_parking("logistics")
