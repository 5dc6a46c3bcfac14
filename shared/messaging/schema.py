"""Schema changes of the messaging tables, applied by every service's own revisions.

The outbox, inbox and parked tables live in each service's schema; a service's revision
calls these with its schema name, so the change is written once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql


def add_retention_and_parking(schema: str) -> None:
    """Outbox rows kept after publishing (published_at), time indexes, the parked table."""
    op.add_column("outbox", sa.Column("published_at", sa.DateTime(timezone=True)),
                  schema=schema)
    op.create_index(f"ix_{schema}_outbox_unpublished", "outbox", ["id"], schema=schema,
                    postgresql_where=sa.text("published_at IS NULL"))
    op.create_index(f"ix_{schema}_outbox_published_at", "outbox", ["published_at"],
                    schema=schema)
    op.create_index(f"ix_{schema}_inbox_received_at", "inbox", ["received_at"], schema=schema)
    op.create_table(
        "parked",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("topic", sa.String(), nullable=False),
        sa.Column("partition", sa.Integer()),
        sa.Column("offset", sa.BigInteger()),
        sa.Column("key", sa.LargeBinary()),
        sa.Column("value", sa.LargeBinary()),
        sa.Column("headers", postgresql.JSONB(), nullable=False,
                  server_default=sa.text("'[]'::jsonb")),
        sa.Column("event_type", sa.String()),
        sa.Column("error_type", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("outbox_id", sa.BigInteger()),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("retried_at", sa.DateTime(timezone=True)),
        schema=schema,
    )


def drop_retention_and_parking(schema: str) -> None:
    op.drop_table("parked", schema=schema)
    op.drop_index(f"ix_{schema}_inbox_received_at", "inbox", schema=schema)
    op.drop_index(f"ix_{schema}_outbox_published_at", "outbox", schema=schema)
    op.drop_index(f"ix_{schema}_outbox_unpublished", "outbox", schema=schema)
    op.drop_column("outbox", "published_at", schema=schema)


def add_outbox_unpublished(schema: str) -> None:
    """The relay's queue as a narrow table of ids (`outbox_unpublished`) instead of a
    `published_at` rewritten on every outbox row; retention counts from `created_at`."""
    op.create_table(
        "outbox_unpublished",
        sa.Column("id", sa.BigInteger(), autoincrement=False, primary_key=True),
        schema=schema,
    )
    op.execute(f'INSERT INTO "{schema}".outbox_unpublished (id) '
               f'SELECT id FROM "{schema}".outbox WHERE published_at IS NULL')
    op.drop_index(f"ix_{schema}_outbox_published_at", "outbox", schema=schema)
    op.drop_index(f"ix_{schema}_outbox_unpublished", "outbox", schema=schema)
    op.drop_column("outbox", "published_at", schema=schema)
    op.create_index(f"ix_{schema}_outbox_created_at", "outbox", ["created_at"], schema=schema,
                    postgresql_using="brin")


def drop_outbox_unpublished(schema: str) -> None:
    op.drop_index(f"ix_{schema}_outbox_created_at", "outbox", schema=schema)
    op.add_column("outbox", sa.Column("published_at", sa.DateTime(timezone=True)),
                  schema=schema)
    # Rows already published get their creation time: the best time known.
    op.execute(f'UPDATE "{schema}".outbox o SET published_at = o.created_at WHERE NOT EXISTS '
               f'(SELECT 1 FROM "{schema}".outbox_unpublished u WHERE u.id = o.id)')
    op.create_index(f"ix_{schema}_outbox_unpublished", "outbox", ["id"], schema=schema,
                    postgresql_where=sa.text("published_at IS NULL"))
    op.create_index(f"ix_{schema}_outbox_published_at", "outbox", ["published_at"],
                    schema=schema)
    op.drop_table("outbox_unpublished", schema=schema)
