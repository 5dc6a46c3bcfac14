"""The one Alembic environment of every service: upgrades the schema named in the config.

Each service keeps only its revisions (services/<name>/migrations/); the tables compared
against are its SQLModel models plus its outbox and inbox.
"""

from alembic import context
from sqlmodel import SQLModel

from shared.messaging.outbox import outbox_tables
from shared.service.db import run_migrations_online

schema: str = context.config.attributes["schema"]
outbox_tables(schema)
run_migrations_online(SQLModel.metadata, schema)
