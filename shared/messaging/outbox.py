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
from base64 import b64decode, b64encode
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    insert,
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
    """The outbox, inbox and parked records of one service's schema."""

    schema: str
    outbox: Table
    inbox: Table
    parked: Table


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
        # Set once the broker acknowledged the record; published rows are kept for the
        # retention window so a broker that lost its data can be refilled (replay).
        Column("published_at", DateTime(timezone=True), nullable=True),
        Index(f"ix_{schema}_outbox_unpublished", "id",
              postgresql_where=text("published_at IS NULL")),
        Index(f"ix_{schema}_outbox_published_at", "published_at"),
        schema=schema,
    )
    inbox = Table(
        "inbox",
        md,
        Column("source", String, primary_key=True),
        Column("id", String, primary_key=True),
        Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Index(f"ix_{schema}_inbox_received_at", "received_at"),
        schema=schema,
    )
    parked = Table(
        "parked",
        md,
        Column("id", BigInteger, Identity(), primary_key=True),
        # publish: an outbox row the broker refuses for good (over the size limit);
        # consume: a record that could be neither handled nor dead-lettered.
        Column("stage", String, nullable=False),
        Column("topic", String, nullable=False),
        Column("partition", Integer, nullable=True),
        Column("offset", BigInteger, nullable=True),
        Column("key", LargeBinary, nullable=True),
        Column("value", LargeBinary, nullable=True),
        Column("headers", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
        Column("event_type", String, nullable=True),
        Column("error_type", String, nullable=False),
        Column("reason", String, nullable=False),
        Column("outbox_id", BigInteger, nullable=True),
        Column("parked_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("retried_at", DateTime(timezone=True), nullable=True),
        schema=schema,
    )
    return OutboxTables(schema, outbox, inbox, parked)


def encode_headers(headers: Iterable[tuple[str, bytes | None]]) -> list[dict[str, str | None]]:
    """Kafka headers as JSON, key and value base64-encoded.

    Any byte (a NUL included, which Postgres' jsonb refuses in text) survives the trip.
    """
    return [{"k": b64encode(k.encode("utf-8", "surrogateescape")).decode(),
             "v": None if v is None else b64encode(v).decode()} for k, v in headers]


def decode_headers(raw: Sequence[Any]) -> list[tuple[str, bytes | None]]:
    """Headers as encode_headers wrote them (or as [key, latin-1 value] pairs, the old form)."""
    out: list[tuple[str, bytes | None]] = []
    for item in raw:
        if isinstance(item, dict):
            value = item.get("v")
            out.append((b64decode(item["k"]).decode("utf-8", "surrogateescape"),
                        None if value is None else b64decode(value)))
        else:
            key, value = item
            out.append((str(key), None if value is None else str(value).encode("latin-1")))
    return out


async def park(
    ctx: ServiceContext,
    *,
    stage: str,
    topic: str,
    error_type: str,
    reason: str,
    partition: int | None = None,
    offset: int | None = None,
    key: bytes | None = None,
    value: bytes | None = None,
    headers: Iterable[tuple[str, bytes | None]] = (),
    event_type: str | None = None,
    outbox_id: int | None = None,
    session: AsyncSession | None = None,
) -> None:
    """Keep a record that can never go where it should, with why; the stream moves on.

    `stage` is `publish` (an outbox row the broker refuses for good) or `consume` (a record
    that could be neither handled nor dead-lettered). Inside `session` when given (the
    caller's transaction), else in a transaction of its own.
    """
    row = {"stage": stage, "topic": topic, "partition": partition, "offset": offset,
           "key": key, "value": value, "headers": encode_headers(headers),
           "event_type": event_type, "error_type": error_type, "reason": reason[:4000],
           "outbox_id": outbox_id}
    if session is not None:
        await session.execute(insert(ctx.tables.parked), [row])
    else:
        async with ctx.sessionmaker() as own, own.begin():
            await own.execute(insert(ctx.tables.parked), [row])
    metrics.PARKED.labels(ctx.service, stage, error_type).inc()
    log.error("record parked", extra={"stage": stage, "topic": topic, "partition": partition,
                                      "offset": offset, "error_type": error_type,
                                      "reason": reason[:500]})


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
