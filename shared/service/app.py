"""The shell every service runs in: one process = FastAPI (HTTP) + FastStream (Kafka).

Start-up order: wait for Postgres, migrate this service's schema, create topics, start the
outbox relay, then join the consumer group. `/health` checks the database and the broker
(readiness), `/live` only that the process answers (liveness); `/asyncapi` serves the
service's AsyncAPI document; errors are problem responses. Every request body is bounded
(`BodyLimit`) before anything reads it, and NUL characters in the path, query or a JSON
body are refused (`reject_nul`) before they reach a handler or Postgres.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import inspect
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.contracts import INGRESS_TOPICS, TOPICS
from shared.messaging.consumer import Handlers, subscribe
from shared.messaging.kafka import ensure_topics, make_broker, make_producer
from shared.messaging.outbox import OutboxRelay, RelayBell, ServiceContext, outbox_tables
from shared.messaging.unit_of_work import SqlUnitOfWork
from shared.service import problems
from shared.service.auth import signing_key
from shared.service.db import make_engine, make_sessionmaker, migrate, wait_for_database
from shared.service.logs import setup_logging
from shared.service.settings import Settings, load_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """Work a service does on its own every `every_s` seconds (a daily plan, a sweep).

    `run` must be idempotent and safe with several replicas running it at once (take an
    advisory lock, or check before acting): each replica runs its own jobs.
    """

    name: str
    every_s: float
    run: Callable[[Service], Awaitable[None]]


@dataclass
class ServiceSpec:
    """What makes one service: its name (= its schema), handlers, HTTP routes.

    Its topics follow from its handlers; its migrations are `services/<name>/migrations`.
    """

    name: str
    handlers: Handlers
    router: APIRouter
    description: str = ""
    #: The service's own record tables pruned by age: (table, timestamp column).
    retained: tuple[tuple[str, str], ...] = ()
    jobs: tuple[Job, ...] = ()
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
                                  make_sessionmaker(self.engine), settings=settings,
                                  retained=spec.retained)
        #: Sessions whose statements each run on their own (`ReadSessionDep`).
        self.read_sessionmaker = make_sessionmaker(
            self.engine.execution_options(isolation_level="AUTOCOMMIT"))
        self.broker: KafkaBroker = make_broker(settings, spec.name)
        if spec.consumes and settings.consume:
            subscribe(self.broker, self.ctx, spec.handlers,
                      [settings.topic(t) for t in spec.consumes], settings,
                      ingress=[settings.topic(t) for t in spec.consumes
                               if t in INGRESS_TOPICS])
        self.producer: AIOKafkaProducer | None = None
        self.relay: OutboxRelay | None = None
        self.bell: RelayBell | None = None
        self.jobs: list[asyncio.Task[None]] = []
        self.background: set[asyncio.Task[None]] = set()
        self.ready = False

    def uow(self) -> SqlUnitOfWork:
        """One transaction for one use case: `async with service.uow() as uow:` in a route.

        A route commits inside its own body (not in a dependency's teardown), so a failed
        commit is answered as an error rather than after a success was sent.
        """
        return SqlUnitOfWork(self.ctx)

    def make_relay(self) -> OutboxRelay:
        """This service's outbox relay over its producer (started by `start`)."""
        assert self.producer is not None, "the producer is made in start()"
        return OutboxRelay(self.ctx, self.producer, self.settings.relay_batch,
                           self.settings.relay_idle_poll_s, self.settings.kafka_topic_prefix)

    async def start(self) -> None:
        # Each step is logged: a process that never becomes ready says where it waits.
        log.info("start-up: waiting for the database", extra={"service": self.spec.name})
        await wait_for_database(self.engine)
        log.info("start-up: migrating", extra={"service": self.spec.name})
        await migrate(self.engine, self.spec.migrations_dir, self.spec.name)
        log.info("start-up: creating topics", extra={"service": self.spec.name})
        await ensure_topics(self.settings.kafka_bootstrap_servers,
                            [self.settings.topic(t) for t in TOPICS],
                            partitions=self.settings.kafka_partitions,
                            replication_factor=self.settings.kafka_replication_factor)
        # aiokafka clients bind to the running loop, so they are made here, not in __init__.
        self.producer = make_producer(self.settings, f"{self.spec.name}-relay")
        await self.producer.start()
        self.relay = self.make_relay()
        if self.settings.relay:
            self.relay.start()
        self.bell = RelayBell(self.ctx)
        self.bell.start()
        log.info("start-up: joining the consumer group", extra={"service": self.spec.name})
        await self.broker.start()
        self.jobs = [asyncio.create_task(self._run_job(job), name=f"job-{job.name}")
                     for job in self.spec.jobs]
        self.ready = True
        log.info("service started", extra={"service": self.spec.name})

    async def _run_job(self, job: Job) -> None:
        """Run `job` every `every_s`; a failure is logged and tried again next time."""
        while True:
            await asyncio.sleep(job.every_s)
            try:
                await job.run(self)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job failed; it runs again later", extra={"job": job.name})

    def spawn(self, work: Awaitable[None], name: str) -> None:
        """Run work a request started and that outlives it (an import job); it is
        cancelled when the service stops, so it must be resumable."""
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        task.set_name(name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def stop(self) -> None:
        self.ready = False
        tasks = [*self.jobs, *self.background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.jobs = []
        await self.broker.stop()
        if self.bell is not None:
            await self.bell.stop()
        if self.relay is not None:
            await self.relay.stop()
        if self.producer is not None:
            await self.producer.stop()
        await self.engine.dispose()

    async def health(self) -> dict[str, Any]:
        """Each check as "ok" or "unreachable"; why is logged, never answered (no hosts,
        users or exception text in a body anyone may read)."""
        checks: dict[str, Any] = {}
        try:
            async with asyncio.timeout(2):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            log.warning("health: database unreachable",
                        extra={"service": self.spec.name, "error": repr(exc)})
            checks["database"] = "unreachable"
        try:
            ok = await self.broker.ping(timeout=2.0)
            checks["broker"] = "ok" if ok else "unreachable"
        except Exception as exc:  # noqa: BLE001
            log.warning("health: broker unreachable",
                        extra={"service": self.spec.name, "error": repr(exc)})
            checks["broker"] = "unreachable"
        checks["consumers"] = ("ok" if self.ready else "starting") if self.settings.consume \
            else "ok"  # an HTTP-only process (CONSUME=false) has none to wait for
        checks["status"] = "ok" if all(v == "ok" for v in checks.values()) else "degraded"
        return checks

    def asyncapi(self) -> dict[str, Any]:
        """The service's AsyncAPI document, as FastStream generates it."""
        from shared.service.asyncapi import document

        return document(self.spec)


async def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


async def get_session(service: ServiceDep) -> AsyncIterator[AsyncSession]:
    """A read-only session for queries outside any unit of work."""
    async with service.ctx.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_read_session(service: ServiceDep) -> AsyncIterator[AsyncSession]:
    """A session whose statements each run on their own (autocommit), for lookups a desk
    waits on: no BEGIN and ROLLBACK around them, one round trip a query instead of three.
    Under READ COMMITTED each statement takes its own snapshot inside a transaction too,
    so the reads see the same; not for `SET LOCAL` or row locks."""
    async with service.read_sessionmaker() as session:
        yield session


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]


#: A route sets `openapi_extra={BODY_LIMIT_KEY: n}` to have its own body limit (bytes)
#: instead of `http_max_body_bytes` (the MARC upload does); it shows in the OpenAPI too.
BODY_LIMIT_KEY = "x-max-body-bytes"


class BodyTooLarge(StarletteHTTPException):
    """A request body over its limit: 413, naming the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"request body: larger than the limit of {limit} bytes for this route "
            f"(HTTP_MAX_BODY_BYTES, see docs/http.md#limits)",
        )
        self.limit = limit


class BodyLimit:
    """ASGI middleware: a body over its route's limit is refused before anything reads it.

    A `Content-Length` over the limit is answered 413 at once (nothing is read, no token is
    checked); a chunked body is counted as it is received and reading stops at the first
    chunk past the limit.
    """

    def __init__(self, app: ASGIApp, default: int,
                 overrides: Sequence[tuple[re.Pattern[str], int]] = ()) -> None:
        self.app = app
        self.default = default
        self.overrides = list(overrides)

    def limit_for(self, path: str) -> int:
        for pattern, limit in self.overrides:
            if pattern.match(path):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length" and value.strip().isdigit() and int(value) > limit:
                await problems.problem(413, BodyTooLarge(limit).detail)(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:  # raised where no exception handler saw it
            if started:
                raise
            await problems.problem(413, exc.detail)(scope, receive, send)


def body_limit_overrides(router: APIRouter) -> list[tuple[re.Pattern[str], int]]:
    """The routes of a service's router that declare their own body limit (`BODY_LIMIT_KEY`).

    The router is included without a prefix, so each route's own path pattern applies.
    """
    return [(route.path_regex, int(route.openapi_extra[BODY_LIMIT_KEY]))
            for route in router.routes
            if isinstance(route, APIRoute) and route.openapi_extra
            and BODY_LIMIT_KEY in route.openapi_extra]


def _nul_paths(value: Any, path: tuple[str | int, ...]) -> Iterator[tuple[str | int, ...]]:
    """Where a decoded JSON value holds a NUL character (in a string or an object key)."""
    if isinstance(value, str):
        if "\x00" in value:
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                yield (*path, key)
            else:
                yield from _nul_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_paths(item, (*path, index))


async def reject_nul(request: Request) -> None:
    """422 naming each path or query parameter, or JSON body field, holding a NUL (0x00).

    Postgres cannot store NUL in text; refusing it here, once for every route, keeps it from
    ever reaching a query as a 500.
    """
    locs: list[list[str | int]] = []
    locs += [["path", name] for name, value in request.path_params.items()
             if isinstance(value, str) and "\x00" in value]
    locs += [["query", name] for name, value in request.query_params.multi_items()
             if "\x00" in name or "\x00" in value]
    content_type = request.headers.get("content-type", "")
    if "json" in content_type:
        raw = await request.body()
        if b"\\u0000" in raw:
            try:
                locs += [["body", *p] for p in _nul_paths(json.loads(raw), ())]
            except ValueError:
                pass  # not JSON: the route's own validation says so
    if locs:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [
            {"loc": loc, "msg": "must not contain a NUL character (\\u0000)",
             "type": "nul_character"} for loc in locs
        ])


def build_app(spec: ServiceSpec, settings: Settings | None = None,
              configure_logging: bool = True) -> FastAPI:
    settings = settings or load_settings()
    if configure_logging:
        setup_logging(spec.name, settings.log_level)
    service = Service(spec, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        # What is alive once the service runs (modules, models, compiled queries) lives as
        # long as the process: moved out of the collector's sight, so the full collections
        # a busy request path triggers scan only what requests made (no 150 ms pauses).
        gc.freeze()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title=f"Branchline {spec.name}", description=spec.description,
                  lifespan=lifespan, dependencies=[Depends(reject_nul)])
    app.state.service = service
    app.state.signing_key = signing_key(settings)
    problems.install(app)

    @app.get("/live", tags=["operations"])
    async def live() -> JSONResponse:
        """Liveness: the process answers. No dependency is checked (that is /health)."""
        return JSONResponse({"status": "ok"})

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
    app.add_middleware(BodyLimit, default=settings.http_max_body_bytes,
                       overrides=body_limit_overrides(spec.router))
    return app


def lower_priority(nice: int) -> None:
    """Add `nice` to this process's nice value, and to its autogroup's where Linux groups
    processes by session (`kernel.sched_autogroup_enabled`, on in most desktop and
    container kernels).

    With autogroups the scheduler first shares the cores between sessions, and a nice value
    only weighs threads inside one session: a process started in a session of its own (as a
    supervisor or `setsid` starts it) would be niced for nothing. Its autogroup's nice is
    what ranks it against the other sessions. Where the file is absent or not writable
    (autogroups off, a cgroup-only scheduler setup), the plain nice value is all there is.
    """
    os.nice(nice)
    autogroup = Path("/proc/self/autogroup")
    try:
        current = int(autogroup.read_text().split("nice")[-1])
        autogroup.write_text(str(min(19, current + nice)))
    except (OSError, ValueError) as exc:
        log.debug("autogroup nice not set", extra={"error": repr(exc)})


def run(name: str) -> None:
    """Serve one service (HTTP and Kafka) until stopped: `python -m shared.service NAME`."""
    import uvicorn

    settings = load_settings()
    if settings.process_nice:
        lower_priority(settings.process_nice)
    app = build_app(load_spec(name), settings)
    uvicorn.run(app, host=settings.host, port=settings.port_for(name), log_config=None,
                access_log=False, timeout_graceful_shutdown=10)
