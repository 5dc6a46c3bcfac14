"""Session infrastructure: the embedded broker and Postgres, or external ones if configured.

Set KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL to run the suite against a real cluster.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.infra import EmbeddedKafka, EmbeddedPostgres, free_port
from tests.support import Infra


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    database = os.environ.get("DATABASE_URL")
    started: list[EmbeddedPostgres | EmbeddedKafka] = []
    pg: EmbeddedPostgres | None = None
    base = Path(tempfile.mkdtemp(prefix="branchline-test-", dir="/tmp"))
    base.chmod(0o755)
    try:
        if not database:
            pg = EmbeddedPostgres(base / "pg", port=free_port())
            pg.start()
            started.append(pg)
            database = pg.url
        if not kafka:
            broker = EmbeddedKafka(base / "kafka", port=free_port())
            broker.start()
            started.append(broker)
            kafka = broker.bootstrap
        yield Infra(kafka=kafka, database_url=database, postgres=pg)
    finally:
        for proc in reversed(started):
            proc.stop()
        shutil.rmtree(base, ignore_errors=True)
