"""Composition shared by the four services: one process = FastAPI (HTTP) + FastStream (Kafka).

Start-up order: wait for Postgres, migrate this service's schema, create topics, start the
outbox relay, then join the consumer group. `/health` checks the database and the broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from aiokafka import AIOKafkaProducer
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.auth import signing_key
from shared.broker import ensure_topics, make_broker, make_producer
from shared.consumer import EventProcessor, Handler, Prefetch, subscribe
from shared.db import make_engine, make_sessionmaker, migrate, wait_for_database
from shared.events import TOPICS
from shared.logs import setup_logging
from shared.outbox import OutboxRelay, OutboxTables, ServiceContext, UnitOfWork
from shared.settings import Settings, load_settings

log = logging.getLogger(__name__)


@dataclass
class ServiceSpec:
    """What makes one service: its name, schema tables, migrations, topics and handlers."""

    name: str
    tables: OutboxTables
    migrations_dir: Path
    consumes: Sequence[str]
    handlers: dict[str, Handler]
    prefetch: Prefetch | None = None
    routers: Sequence[Any] = field(default_factory=tuple)
    title: str = ""
    description: str = ""


class Service:
    """A running service: its context for handlers and API routes."""

    def __init__(self, spec: ServiceSpec, settings: Settings) -> None:
        self.spec = spec
        self.settings = settings
        self.engine: AsyncEngine = make_engine(settings.db_url_for(spec.name),
                                               settings.db_pool_size)
        self.ctx = ServiceContext(spec.name, spec.tables, make_sessionmaker(self.engine))
        self.processor = EventProcessor(self.ctx, spec.handlers, spec.prefetch)
        self.broker: KafkaBroker = make_broker(settings, spec.name)
        if spec.consumes:
            subscribe(self.broker, self.processor, [settings.topic(t) for t in spec.consumes],
                      settings)
        self.producer: AIOKafkaProducer | None = None
        self.relay: OutboxRelay | None = None
        self.ready = False

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.ctx)

    async def start(self) -> None:
        await wait_for_database(self.engine)
        await migrate(self.engine, self.spec.migrations_dir, self.spec.name)
        await ensure_topics(self.settings.kafka_bootstrap_servers,
                            [self.settings.topic(t) for t in TOPICS],
                            partitions=self.settings.kafka_partitions)
        # aiokafka clients bind to the running loop, so they are made here, not in __init__.
        self.producer = make_producer(self.settings, f"{self.spec.name}-relay")
        await self.producer.start()
        self.relay = OutboxRelay(self.ctx, self.producer, self.settings.relay_batch,
                                 self.settings.relay_idle_poll_s,
                                 self.settings.kafka_topic_prefix)
        self.relay.start()
        await self.broker.start()
        self.ready = True
        log.info("service started", extra={"service": self.spec.name})

    async def stop(self) -> None:
        self.ready = False
        await self.broker.stop()
        if self.relay is not None:
            await self.relay.stop()
        if self.producer is not None:
            await self.producer.stop()
        await self.engine.dispose()

    async def health(self) -> dict[str, Any]:
        checks: dict[str, Any] = {}
        try:
            async with asyncio.timeout(2):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            checks["database"] = f"unreachable: {exc!r}"
        try:
            ok = await self.broker.ping(timeout=2.0)
            checks["broker"] = "ok" if ok else "unreachable"
        except Exception as exc:  # noqa: BLE001
            checks["broker"] = f"unreachable: {exc!r}"
        checks["consumers"] = "ok" if self.ready else "starting"
        checks["status"] = "ok" if all(v == "ok" for v in checks.values()) else "degraded"
        return checks


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def build_app(spec: ServiceSpec, settings: Settings | None = None,
              configure_logging: bool = True) -> FastAPI:
    settings = settings or load_settings()
    if configure_logging:
        setup_logging(spec.name, settings.log_level)
    service = Service(spec, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title=spec.title or f"Branchline {spec.name}", description=spec.description,
                  lifespan=lifespan)
    app.state.service = service
    app.state.signing_key = signing_key(settings)

    @app.get("/health", tags=["operations"])
    async def health() -> JSONResponse:
        result = await service.health()
        return JSONResponse(result, status_code=200 if result["status"] == "ok" else 503)

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics_endpoint() -> Response:
        """Prometheus text format, served at /metrics itself (no redirect to /metrics/)."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
    for router in spec.routers:
        app.include_router(router)
    return app


def run(spec_factory: Any, name: str) -> None:
    """Entry point of `python -m services.<name>`: serve HTTP and consume until stopped."""
    import uvicorn

    settings = load_settings()
    app = build_app(spec_factory(), settings)
    uvicorn.run(app, host=settings.host, port=settings.port_for(name), log_config=None,
                access_log=False, timeout_graceful_shutdown=10)
