from sqlmodel import SQLModel

from services.cataloging.models import SCHEMA
from shared.db import run_migrations_online

run_migrations_online(SQLModel.metadata, SCHEMA)
