"""The shell every service runs in: one process = FastAPI (HTTP) + FastStream (Kafka).

Start-up order: wait for Postgres, migrate this service's schema, create topics, start the
outbox relay, then join the consumer group. `/health` checks the database and the broker;
`/asyncapi` serves the service's AsyncAPI document; errors are problem responses.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.contracts import INGRESS_TOPICS, TOPICS
from shared.messaging.consumer import EventProcessor, Handlers, subscribe
from shared.messaging.kafka import ensure_topics, make_broker, make_producer
from shared.messaging.outbox import OutboxRelay, ServiceContext, outbox_tables
from shared.messaging.unit_of_work import SqlUnitOfWork
from shared.service import problems
from shared.service.auth import signing_key
from shared.service.db import make_engine, make_sessionmaker, migrate, wait_for_database
from shared.service.logs import setup_logging
from shared.service.settings import Settings, load_settings

log = logging.getLogger(__name__)


@dataclass
class ServiceSpec:
    """What makes one service: its name (= its schema), handlers, HTTP routes.

    Its topics follow from its handlers; its migrations are `services/<name>/migrations`.
    """

    name: str
    handlers: Handlers
    router: APIRouter
    description: str = ""
    migrations_dir: Path = field(default=Path())

    def __post_init__(self) -> None:
        if self.migrations_dir == Path():
            package = importlib.import_module(f"services.{self.name}")
            self.migrations_dir = Path(inspect.getfile(package)).parent / "migrations"

    @property
    def consumes(self) -> tuple[str, ...]:
        return self.handlers.topics


def load_spec(name: str) -> ServiceSpec:
    """The spec of `services.<name>`."""
    spec: ServiceSpec = importlib.import_module(f"services.{name}.spec").SPEC
    return spec


class Service:
    """A running service: its database, broker, relay, and the context handlers share."""

    def __init__(self, spec: ServiceSpec, settings: Settings) -> None:
        self.spec = spec
        self.settings = settings
        self.engine: AsyncEngine = make_engine(settings.db_url_for(spec.name),
                                               settings.db_pool_size)
        self.ctx = ServiceContext(spec.name, outbox_tables(spec.name),
                                  make_sessionmaker(self.engine), settings=settings)
        self.processor = EventProcessor(self.ctx, spec.handlers)
        self.broker: KafkaBroker = make_broker(settings, spec.name)
        if spec.consumes:
            subscribe(self.broker, self.processor, [settings.topic(t) for t in spec.consumes],
                      settings, ingress=[settings.topic(t) for t in spec.consumes
                                         if t in INGRESS_TOPICS])
        self.producer: AIOKafkaProducer | None = None
        self.relay: OutboxRelay | None = None
        self.ready = False

    def uow(self) -> SqlUnitOfWork:
        """One transaction for one use case: `async with service.uow() as uow:` in a route.

        A route commits inside its own body (not in a dependency's teardown), so a failed
        commit is answered as an error rather than after a success was sent.
        """
        return SqlUnitOfWork(self.ctx)

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

    def asyncapi(self) -> dict[str, Any]:
        """The service's AsyncAPI document, as FastStream generates it."""
        from shared.service.asyncapi import document

        return document(self.spec)


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


async def get_session(service: ServiceDep) -> AsyncIterator[AsyncSession]:
    """A read-only session for queries outside any unit of work."""
    async with service.ctx.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


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

    app = FastAPI(title=f"Branchline {spec.name}", description=spec.description,
                  lifespan=lifespan)
    app.state.service = service
    app.state.signing_key = signing_key(settings)
    problems.install(app)

    @app.get("/health", tags=["operations"])
    async def health() -> JSONResponse:
        result = await service.health()
        return JSONResponse(result, status_code=200 if result["status"] == "ok" else 503)

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics_endpoint() -> Response:
        """Prometheus text format, served at /metrics itself (no redirect to /metrics/)."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/asyncapi", tags=["operations"])
    async def asyncapi() -> JSONResponse:
        """The AsyncAPI document: the topics this service consumes and publishes."""
        return JSONResponse(service.asyncapi())

    app.include_router(spec.router)
    return app


def run(name: str) -> None:
    """Serve one service (HTTP and Kafka) until stopped: `python -m shared.service NAME`."""
    import uvicorn

    settings = load_settings()
    app = build_app(load_spec(name), settings)
    uvicorn.run(app, host=settings.host, port=settings.port_for(name), log_config=None,
                access_log=False, timeout_graceful_shutdown=10)
