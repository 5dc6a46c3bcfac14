"""Generate a service's Alembic revision from its models.

`python -m devtools.makemigration circulation "message"` starts a throwaway embedded
Postgres, brings the schema to head, and autogenerates the difference to the models.
"""

from __future__ import annotations

import asyncio
import importlib
import shutil
import sys
import tempfile
from pathlib import Path

from alembic import command

from devtools.infra import EmbeddedPostgres, free_port
from shared.service.db import alembic_config, make_engine, migrate
from shared.service.settings import PROJECT_ROOT


def makemigration(service: str, message: str) -> None:
    importlib.import_module(f"services.{service}.models")
    migrations = PROJECT_ROOT / "services" / service / "migrations"
    migrations.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="branchline-mig-", dir="/tmp"))
    base.chmod(0o755)
    pg = EmbeddedPostgres(base, port=free_port())
    pg.start()
    try:
        engine = make_engine(pg.url)
        asyncio.run(migrate(engine, migrations, service))
        cfg = alembic_config(migrations, pg.url, service)
        command.revision(cfg, message=message, autogenerate=True)
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m devtools.makemigration SERVICE MESSAGE")
    makemigration(sys.argv[1], sys.argv[2])
