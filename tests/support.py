"""Test helpers shared by integration and e2e tests: real broker, real Postgres, polling."""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from shared.contracts import CONTENT_TYPE, TOPICS
from shared.messaging.kafka import ensure_topics
from shared.messaging.outbox import ServiceContext, outbox_tables
from shared.service.app import Service, ServiceSpec, build_app
from shared.service.auth import issue_token
from shared.service.db import make_engine, make_sessionmaker, migrate
from shared.service.settings import Settings

T = TypeVar("T")
SIGNING_KEY = "test-signing-key-" + "x" * 32


@dataclass
class Infra:
    kafka: str
    database_url: str  # the server's maintenance database; tests create their own
    postgres: Any = None  # the EmbeddedPostgres when the suite started one (outage tests)


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def create_database(infra: Infra) -> str:
    """A fresh database per test: services' schemas start empty, nothing leaks between tests."""
    name = "t_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(asyncpg_dsn(infra.database_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _ = infra.database_url.rpartition("/")
    return f"{base}/{name}"


def make_settings(infra: Infra, database_url: str, prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": infra.kafka,
        "database_url": database_url,
        "kafka_topic_prefix": prefix,
        "kafka_session_timeout_ms": 2000,
        "kafka_heartbeat_interval_ms": 500,
        "BRANCHLINE_SIGNING_KEY": SIGNING_KEY,
        "db_pool_size": 5,
        # Tests plan routes when they mean to, never on the clock.
        "route_plan_at": "",
        # Received copies go straight on unless a test means to work the queue.
        "catalog_auto_complete": True,
        "import_spool_dir": Path(tempfile.gettempdir()) / "branchline-test-imports",
    }
    values.update(overrides)
    return Settings(**values)


async def new_env(infra: Infra, **overrides: Any) -> Settings:
    """Fresh database + unique topic prefix, with the prefixed topics created."""
    db = await create_database(infra)
    prefix = f"t{uuid.uuid4().hex[:8]}."
    settings = make_settings(infra, db, prefix, **overrides)
    await ensure_topics(infra.kafka, [prefix + t for t in TOPICS], partitions=4)
    return settings


def token(role: str, **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(role, key=SIGNING_KEY, **kw)}"}


@asynccontextmanager
async def migrated_context(spec: ServiceSpec, settings: Settings,
                           pool_size: int = 2) -> AsyncIterator[ServiceContext]:
    """A service's schema brought to head and its context: the mechanics without HTTP,
    consumer or relay running."""
    engine = make_engine(settings.database_url, pool_size)
    try:
        await migrate(engine, spec.migrations_dir, spec.name)
        yield ServiceContext(spec.name, outbox_tables(spec.name), make_sessionmaker(engine),
                             settings=settings, retained=spec.retained)
    finally:
        await engine.dispose()


class ServiceClient(httpx.AsyncClient):
    """An HTTP client wired to a service running in this process; `.service` is the service."""

    def __init__(self, service: Service, transport: httpx.ASGITransport) -> None:
        super().__init__(transport=transport, base_url="http://svc")
        self.service = service


@asynccontextmanager
async def running_service(
    spec: ServiceSpec, settings: Settings,
) -> AsyncIterator[ServiceClient]:
    """Start a service in this process (its consumer, relay and API) against real infra."""
    app = build_app(spec, settings, configure_logging=False)
    service: Service = app.state.service
    await service.start()
    try:
        async with ServiceClient(service, httpx.ASGITransport(app=app)) as client:
            yield client
    finally:
        await service.stop()


def cloud_event(event_type: str, subject: str, data: dict[str, Any], *, source: str,
                event_id: str | None = None, time: datetime | None = None) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": source,
        "type": event_type,
        "time": (time or datetime.now(UTC)).isoformat(),
        "subject": subject,
        "datacontenttype": "application/json",
        "data": data,
    }


def item_cataloged(barcode: str, owner: str, site: str | None = None) -> dict[str, Any]:
    """What cataloging publishes for a new item; `site` defaults to the owning branch."""
    return cloud_event(
        "cataloging.item_cataloged", barcode,
        {"barcode": barcode, "bib_id": "bib-1", "isbn": "9787020002207", "title": "Wei Cheng",
         "call_number": "I247.5/Q1", "owning_branch": owner, "site": site or owner},
        source="branchline/cataloging",
    )


def branch_event(event_type: str, branch: str, barcode: str, event_id: str | None = None,
                 **data: Any) -> dict[str, Any]:
    return cloud_event(event_type, barcode, {"branch": branch, "barcode": barcode, **data},
                       source=f"branch/{branch}", event_id=event_id)


async def produce(settings: Settings, topic: str,
                  records: Iterable[tuple[bytes | None, bytes | None] | dict[str, Any]],
                  headers: list[tuple[str, bytes]] | None = None) -> None:
    """Publish records to a (prefixed) topic: dicts are CloudEvents keyed by subject."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all",
                                linger_ms=5)
    await producer.start()
    try:
        futures = []
        for record in records:
            if isinstance(record, dict):
                key, value = record["subject"].encode(), json.dumps(record).encode()
                hdrs = headers or [("content-type", CONTENT_TYPE.encode())]
            else:
                key, value = record
                hdrs = headers or []
            futures.append(await producer.send(settings.topic(topic), value=value, key=key,
                                               headers=hdrs))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topic(settings: Settings, topic: str, *, at_least: int = 1,
                     timeout: float = 30.0,
                     where: Callable[[ConsumerRecord], bool] | None = None,
                     settle: float = 0.0) -> list[ConsumerRecord]:
    """Read a topic from the start until `at_least` matching records (or time out).

    `settle` keeps reading that many seconds after reaching the count, to catch extras.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    name = settings.topic(topic)
    try:
        partitions = consumer.partitions_for_topic(name) or set()
        if not partitions:
            await consumer.force_metadata_update() if hasattr(consumer, "force_metadata_update") \
                else None
            partitions = consumer.partitions_for_topic(name) or {0, 1, 2, 3}
        tps = [TopicPartition(name, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: list[ConsumerRecord] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        settle_until: float | None = None
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found.extend(r for r in records if where is None or where(r))
            if len(found) >= at_least:
                if settle <= 0:
                    break
                settle_until = settle_until or loop.time() + settle
                if loop.time() >= settle_until:
                    break
        return found
    finally:
        await consumer.stop()


def events_of(records: Iterable[ConsumerRecord], event_type: str | None = None) -> list[dict]:
    out = []
    for r in records:
        try:
            obj = json.loads(r.value)
        except (TypeError, ValueError):
            continue
        if event_type is None or obj.get("type") == event_type:
            out.append(obj)
    return out


async def eventually(check: Callable[[], Awaitable[T]], *, timeout: float = 30.0,
                     interval: float = 0.2, what: str = "condition") -> T:
    """Poll until `check` returns a truthy value; fail with the last value seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        try:
            last = await check()
            if last:
                return last
        except AssertionError as exc:
            last = exc
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


async def sites_known_everywhere(database_url: str, count: int) -> None:
    """Wait until acquisition, cataloging and circulation each know `count` sites.

    A network posted to logistics reaches the other services as events: a test that orders
    for a branch before acquisition has heard of all of them would be refused ("unknown
    branch").
    """
    conn = await asyncpg.connect(asyncpg_dsn(database_url))

    async def known() -> bool:
        counts = [await conn.fetchval(f"SELECT count(*) FROM {schema}.site")
                  for schema in ("acquisition", "cataloging", "circulation")]
        return all(n >= count for n in counts)

    try:
        await eventually(known, timeout=60, what="every service to know the network's sites")
    finally:
        await conn.close()
