"""The bench's write-ahead-log figures on a real Postgres: bytes per check-in, and which
table wrote them (pg_walinspect)."""

from __future__ import annotations

import asyncpg
import pytest

from devtools.bench.run import render, wal_position, wal_written
from tests.support import Infra, asyncpg_dsn, create_database

pytestmark = pytest.mark.integration


async def test_the_wal_a_phase_wrote_is_counted_and_found_by_table(infra: Infra) -> None:
    dsn = asyncpg_dsn(await create_database(infra))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE shelf (id bigserial PRIMARY KEY, note text)")
        since = await wal_position(dsn)
        await conn.executemany("INSERT INTO shelf (note) VALUES ($1)",
                               [("x" * 1_000,) for _ in range(200)])
    finally:
        await conn.close()
    wal = await wal_written(dsn, since, per=100)  # 2 rows a "check-in"
    assert wal["bytes_per_checkin"] >= 2_000
    inserts = [t for t in wal["top"] if t["relation"] == "public.shelf"
               and t["record"].startswith("INSERT")]  # INSERT, INSERT+INIT (a new page)
    assert round(sum(t["records_per_checkin"] for t in inserts), 2) == 2.0
    assert sum(t["bytes_per_checkin"] for t in inserts) >= 2_000
    assert wal["top"][0]["relation"] == "public.shelf"  # the bulk of what was written


def test_the_report_shows_the_wal_per_checkin_and_its_tables() -> None:
    wal = {"bytes_per_checkin": 11_043, "top": [
        {"relation": "circulation.outbox", "record": "UPDATE", "records_per_checkin": 2.73,
         "bytes_per_checkin": 2_014}]}
    result = {
        "when": "t", "parameters": {"replicas": 1, "load_rate": 1000},
        "machine": "m",
        "baselines": {"kafka": {"produce_per_s": 1.0, "consume_per_s": 1.0,
                                "produce_consume_per_s": 1.0},
                      "kafka_hop": {"rate": 1000, "p50_ms": 1.0, "p99_ms": 1.0},
                      "postgres": {"commits_per_s_1_conn": 1.0, "commits_per_s_8_conns": 1.0}},
        "system": {"throughput": {"checkins": 10, "elapsed_s": 1.0, "checkins_per_s": 10.0,
                                  "cpu_cores_used": {"circulation": 0.5}, "wal": wal},
                   "latency": [], "http": [], "cpu_cores_by_phase": {}},
    }
    table = render(result)
    assert "**11,043 bytes per check-in**" in table
    assert "| circulation.outbox | UPDATE | 2.73 | 2,014 |" in table
