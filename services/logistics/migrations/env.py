from sqlmodel import SQLModel

from services.logistics.models import SCHEMA
from shared.db import run_migrations_online

run_migrations_online(SQLModel.metadata, SCHEMA)
