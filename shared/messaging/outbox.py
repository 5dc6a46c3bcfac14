"""The transactional outbox: its tables, and the relay that publishes it.

A handler's state change, the inbox row of the event it handled and the events it causes
commit in one transaction (see unit_of_work.py). The relay claims committed outbox rows with
`FOR UPDATE SKIP LOCKED` (never a "last id seen" cursor: sequences commit out of order),
publishes them without awaiting each one, waits for every acknowledgement (acks=all), and
only then deletes them. A crash anywhere means a re-publish, never a loss.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache

from aiokafka import AIOKafkaProducer
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.service import metrics
from shared.service.settings import Settings, load_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboxTables:
    """The outbox and inbox of one service's schema."""

    schema: str
    outbox: Table
    inbox: Table


@cache
def outbox_tables(schema: str, metadata: MetaData | None = None) -> OutboxTables:
    """The outbox and inbox tables of one service's schema (declared once per schema)."""
    md = metadata if metadata is not None else SQLModel.metadata
    outbox = Table(
        "outbox",
        md,
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("topic", String, nullable=False),
        Column("key", LargeBinary, nullable=True),
        Column("value", LargeBinary, nullable=True),
        Column("headers", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
        Column("event_type", String, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        schema=schema,
    )
    inbox = Table(
        "inbox",
        md,
        Column("source", String, primary_key=True),
        Column("id", String, primary_key=True),
        Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        schema=schema,
    )
    return OutboxTables(schema, outbox, inbox)


def encode_headers(headers: Iterable[tuple[str, bytes | None]]) -> list[list[str | None]]:
    """Kafka headers as JSON; latin-1 keeps arbitrary bytes intact."""
    return [[k, None if v is None else v.decode("latin-1")] for k, v in headers]


def decode_headers(raw: Sequence[Sequence[str | None]]) -> list[tuple[str, bytes | None]]:
    return [(str(k), None if v is None else v.encode("latin-1")) for k, v in raw]


@dataclass
class ServiceContext:
    """What a service's handlers share: its name, its tables, its database, its relay bell."""

    service: str
    tables: OutboxTables
    sessionmaker: async_sessionmaker[AsyncSession]
    settings: Settings = field(default_factory=load_settings)
    wake_relay: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def source(self) -> str:
        return f"branchline/{self.service}"


class OutboxRelay:
    """Publishes committed outbox rows in id order, then deletes them once acknowledged."""

    def __init__(self, ctx: ServiceContext, producer: AIOKafkaProducer,
                 batch: int = 1000, idle_poll_s: float = 0.5, topic_prefix: str = "") -> None:
        self.ctx = ctx
        self.topic_prefix = topic_prefix
        self.producer = producer
        self.batch = batch
        self.idle_poll_s = idle_poll_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.ctx.service}")

    async def stop(self) -> None:
        self._stopping = True
        self.ctx.wake_relay.set()
        if self._task:
            try:
                await asyncio.wait_for(self._task, timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()

    async def _run(self) -> None:
        backoff = 0.1
        last_backlog = 0.0
        while not self._stopping:
            try:
                published = await self.drain_once()
                backoff = 0.1
                now = time.monotonic()
                if now - last_backlog > 5:
                    await self._update_backlog()
                    last_backlog = now
                if published:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the relay must outlive outages
                log.warning("outbox relay failed; retrying", extra={"error": repr(exc),
                                                                   "retry_in_s": backoff})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            try:
                await asyncio.wait_for(self.ctx.wake_relay.wait(), timeout=self.idle_poll_s)
            except TimeoutError:
                pass
            self.ctx.wake_relay.clear()

    async def drain_once(self) -> int:
        """Claim, publish and delete one batch; return how many rows were published."""
        table = self.ctx.tables.outbox
        schema = table.schema
        async with self.ctx.sessionmaker() as session, session.begin():
            result = await session.execute(
                text(
                    f'SELECT id, topic, key, value, headers, event_type FROM "{schema}".outbox '
                    "ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED"
                ),
                {"n": self.batch},
            )
            rows = result.all()
            if not rows:
                return 0
            futures = []
            for row in rows:
                headers = row.headers if isinstance(row.headers, list) else json.loads(row.headers)
                futures.append(
                    await self.producer.send(
                        self.topic_prefix + row.topic, value=row.value, key=row.key,
                        headers=decode_headers(headers),
                    )
                )
            await asyncio.gather(*futures)
            await session.execute(
                text(f'DELETE FROM "{schema}".outbox WHERE id = ANY(:ids)').bindparams(
                    bindparam("ids", type_=ARRAY(BigInteger))
                ),
                {"ids": [row.id for row in rows]},
            )
        for row in rows:
            metrics.child(metrics.PUBLISHED, self.ctx.service, row.event_type).inc()
        return len(rows)

    async def _update_backlog(self) -> None:
        async with self.ctx.sessionmaker() as session:
            count = (
                await session.execute(
                    text(f'SELECT count(*) FROM "{self.ctx.tables.schema}".outbox')
                )
            ).scalar_one()
        metrics.OUTBOX_BACKLOG.labels(self.ctx.service).set(count)
