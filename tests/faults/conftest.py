"""The fault suite's network: started once per module on its own Postgres and broker."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.infra import EmbeddedKafka, EmbeddedPostgres, free_port
from tests.faults.cluster import Cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    base = Path(tempfile.mkdtemp(prefix="branchline-faults-", dir="/tmp"))
    base.chmod(0o755)
    pg = EmbeddedPostgres(base / "pg", port=free_port())
    kafka = EmbeddedKafka(base / "kafka", port=free_port())
    pg.start()
    kafka.start()
    net = Cluster(base, pg, kafka, prefix=f"f{uuid.uuid4().hex[:6]}.")
    try:
        for name in Cluster.names():
            net.start(name)
        net.wait_healthy()
        yield net
    finally:
        net.stop()
        for name in net.procs:  # shown by pytest when a test failed
            print(f"--- {name} log tail ---\n{net.tail(name, 15)}")
        kafka.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
