"""The transactional outbox: its tables, and the relay that publishes it.

A handler's state change, the inbox row of the event it handled and the events it causes
commit in one transaction (see unit_of_work.py). The relay of the service's leader (one per
service, by advisory lock) claims committed, unpublished outbox rows in id order with
`FOR UPDATE` (never a "last id seen" cursor: sequences commit out of order), publishes them
without awaiting each one, waits for every acknowledgement (acks=all), and only then commits
them published (their ids deleted from `outbox_unpublished`). A crash anywhere means a
re-publish, never a loss. Published rows are kept for the retention window so a broker that
lost its data can be refilled (`maintenance.replay`); a row the broker refuses for good is
parked, never retried as a batch forever.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from base64 import b64decode, b64encode
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnsupportedForMessageFormatError,
)
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
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.messaging.partitioning import murmur2_many, partition_of
from shared.service import metrics
from shared.service.settings import Settings, load_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboxTables:
    """The outbox, inbox and parked records of one service's schema."""

    schema: str
    outbox: Table
    unpublished: Table
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
        # Rows are never updated: published rows are kept for the retention window (from
        # `created_at`) so a broker that lost its data can be refilled (replay). BRIN: a
        # few pages of summaries for a column that grows with the table's order.
        Index(f"ix_{schema}_outbox_created_at", "created_at", postgresql_using="brin"),
        schema=schema,
    )
    # The ids not yet acknowledged by the broker, written with their outbox rows and deleted
    # by the relay once acknowledged: a narrow row to insert and delete instead of rewriting
    # the wide outbox row (about a third of a check-in's write-ahead log, measured).
    unpublished = Table(
        "outbox_unpublished",
        md,
        Column("id", BigInteger, primary_key=True, autoincrement=False),
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
    return OutboxTables(schema, outbox, unpublished, inbox, parked)


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
    #: True while this process's relay is the leader: a commit wakes it in-process. Other
    #: processes' commits wake it through Postgres (RelayBell: NOTIFY on `relay_channel`).
    relay_leads: bool = False
    #: Set by each commit that wrote outbox rows (for RelayBell).
    committed: asyncio.Event = field(default_factory=asyncio.Event)
    #: The service's own record tables pruned by age: (table, timestamp column).
    retained: tuple[tuple[str, str], ...] = ()

    @property
    def source(self) -> str:
        return f"branchline/{self.service}"


#: Errors that belong to one record and that no retry will change: the record is parked.
_TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)
_REFUSED_FOR_GOOD = (*_TOO_LARGE, InvalidTopicError, CorruptRecordException,
                     UnsupportedForMessageFormatError)


class EmptyRecord(ValueError):
    """An outbox row with neither key nor value: Kafka clients cannot produce it."""


def refused_for_good(exc: BaseException) -> str | None:
    """The parked `error_type` when the producer or broker refuses this record for good.

    `too_large` for a record over the producer's `max_request_size` (aiokafka raises it in
    `send()`, before queuing) or the broker's limit; the error class name for another
    per-record refusal; None for anything else (a broker or network outage, a timeout, a
    closed producer, an authorization failure): the batch is then retried, not parked.
    """
    if isinstance(exc, _TOO_LARGE):
        return "too_large"
    if isinstance(exc, _REFUSED_FOR_GOOD):
        return type(exc).__name__
    if isinstance(exc, EmptyRecord):
        return "empty_record"
    return None


#: Records at least this big (key + value bytes) are sent alone rather than in a batch.
SINGLE_RECORD_FROM = 256 * 1024


@lru_cache(maxsize=256)
def _decoded_headers(raw: str) -> tuple[tuple[str, bytes | None], ...]:
    return tuple(decode_headers(json.loads(raw)))


def relay_channel(schema: str) -> str:
    """The Postgres notification channel a commit with outbox rows rings for the leader."""
    return f"branchline_relay_{schema}"


def relay_lock_key(schema: str) -> int:
    """The advisory lock one service's relays elect their leader with (per database)."""
    return zlib.crc32(f"branchline-relay:{schema}".encode())


#: Rest between two rings of one process's bell.
BELL_GAP_S = 0.01


class RelayBell:
    """Rings the relay leader of another process when this one committed outbox rows.

    A NOTIFY inside the transaction would be simplest, but Postgres serialises every
    committing transaction that notified, WAL flush included, behind one lock: at 200
    desk calls a second that was a queue of seconds. So the bell rings after the commit,
    from its own connection, once per burst (commits while a ring is on its way, or in
    the `BELL_GAP_S` after it, are covered by the next one). It rests while this
    process's own relay leads.
    """

    def __init__(self, ctx: ServiceContext, engine: AsyncEngine | None = None) -> None:
        self.ctx = ctx
        self.engine: AsyncEngine = engine if engine is not None else ctx.sessionmaker.kw["bind"]
        self._task: asyncio.Task[None] | None = None
        self.rung = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"relay-bell-{self.ctx.service}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        channel = relay_channel(self.ctx.tables.schema)
        # A connection of its own, kept: one round trip a ring (autocommit), not a pool
        # checkout with its ping, BEGIN and COMMIT competing with the desk calls for
        # the pool.
        conn: AsyncConnection | None = None
        try:
            while True:
                await self.ctx.committed.wait()
                self.ctx.committed.clear()
                if self.ctx.relay_leads:
                    continue
                try:
                    if conn is None:
                        conn = await self.engine.connect()
                    driver = (await conn.get_raw_connection()).driver_connection
                    assert driver is not None
                    await driver.execute("SELECT pg_notify($1, '')", channel)
                    self.rung += 1
                    # Commits of the next few ms share the next ring: a busy desk process
                    # rings about a hundred times a second at most, not once per call.
                    await asyncio.sleep(BELL_GAP_S)
                except Exception as exc:  # noqa: BLE001 - the leader still polls
                    log.warning("relay bell failed; the leader finds the rows at its next "
                                "poll", extra={"service": self.ctx.service,
                                               "error": repr(exc)})
                    if conn is not None:
                        await _discard(conn)
                        conn = None
                    await asyncio.sleep(1.0)
        finally:
            if conn is not None:
                await _discard(conn)


async def _discard(conn: AsyncConnection) -> None:
    """Close a connection for good (not back to the pool: its state is unknown)."""
    try:
        await conn.invalidate()
    except Exception:  # noqa: BLE001 - already dead is fine
        pass


class _Window:
    """One relay window on its way to the broker: an open record batch per partition, and
    what was queued so far (rows, acknowledgement)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.sent: list[tuple[list[Any], asyncio.Future[Any]]] = []
        self._open: dict[tuple[str, int], tuple[list[Any], Any]] = {}
        self._partitions: dict[str, list[int]] = {}

    async def add(self, row: Any, topic: str, headers: list[tuple[str, bytes | None]],
                  hashed: int | None = None) -> None:
        if topic not in self._partitions:
            self._partitions[topic] = sorted(await self.producer.partitions_for(topic))
        partition = partition_of(row.key, self._partitions[topic], hashed)
        group, batch = self._open.get((topic, partition)) or ([], None)
        if batch is None or batch.append(key=row.key, value=row.value, timestamp=None,
                                         headers=headers) is None:
            if batch is not None:  # full: queued, and a new one started
                await self._queue(topic, partition, group, batch)
            group, batch = [], self.producer.create_batch()
            batch.append(key=row.key, value=row.value, timestamp=None, headers=headers)
            self._open[(topic, partition)] = (group, batch)
        group.append(row)

    async def flush(self) -> None:
        """Queue every open batch (before a record sent alone, and at the end)."""
        for (topic, partition), (group, batch) in self._open.items():
            await self._queue(topic, partition, group, batch)
        self._open.clear()

    async def _queue(self, topic: str, partition: int, group: list[Any], batch: Any) -> None:
        self.sent.append((group, await self.producer.send_batch(batch, topic,
                                                                partition=partition)))


class OutboxRelay:
    """Publishes committed outbox rows in id order and marks them published once acknowledged.

    One relay per service publishes at a time: the leader, holding a Postgres session
    advisory lock (`relay_lock_key`) on a dedicated connection. The others try to take the
    lock every `idle_poll_s`; when the leader's connection dies (its process crashed, the
    connection was cut), Postgres releases the lock and one of them takes over. The leader
    also runs the retention pruning (maintenance.prune) every `prune_interval_s`.
    """

    def __init__(self, ctx: ServiceContext, producer: AIOKafkaProducer,
                 batch: int = 1000, idle_poll_s: float = 0.5, topic_prefix: str = "",
                 engine: AsyncEngine | None = None) -> None:
        self.ctx = ctx
        self.topic_prefix = topic_prefix
        self.producer = producer
        self.batch = batch
        self.idle_poll_s = idle_poll_s
        self.engine: AsyncEngine = engine if engine is not None else ctx.sessionmaker.kw["bind"]
        self.lock_key = relay_lock_key(ctx.tables.schema)
        #: Backend pid of the connection holding the leader lock (None: not the leader).
        self.lock_pid: int | None = None
        #: Rows this relay published (and parked) since it was made.
        self.published = 0
        self.parked = 0
        self._lock_conn: AsyncConnection | None = None
        self._lock_checked = 0.0
        self._claimed = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stop_event = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        return self._lock_conn is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.ctx.service}")

    async def stop(self) -> None:
        self._stopping = True
        self._stop_event.set()
        self.ctx.wake_relay.set()
        if self._task:
            try:
                await asyncio.wait_for(self._task, timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        await self._step_down()

    async def _run(self) -> None:
        backoff = 0.1
        last_backlog = 0.0
        last_prune: float | None = None
        try:
            while not self._stopping:
                try:
                    if not await self.lead():
                        await self._pause(self.idle_poll_s)
                        continue
                    published = await self.drain_once()
                    backoff = 0.1
                    now = time.monotonic()
                    if now - last_backlog > 5:
                        await self._update_backlog()
                        last_backlog = now
                    if last_prune is None or now - last_prune >= self.ctx.settings.prune_interval_s:
                        last_prune = now
                        await self._prune()
                    if published or self._claimed:
                        continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the relay must outlive outages
                    log.warning("outbox relay failed; retrying",
                                extra={"error": repr(exc), "retry_in_s": backoff})
                    await self._pause(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                try:
                    await asyncio.wait_for(self.ctx.wake_relay.wait(), timeout=self.idle_poll_s)
                except TimeoutError:
                    pass
                self.ctx.wake_relay.clear()
        finally:
            await self._step_down()

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop_event.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def lead(self) -> bool:
        """True while this relay holds the leader lock; try to take it when it does not.

        The holder's connection is checked at most every `idle_poll_s` (a cheap `SELECT 1`);
        if it is gone, so is the lock, and this relay steps down.
        """
        conn = self._lock_conn
        if conn is not None:
            now = time.monotonic()
            if now - self._lock_checked < min(self.idle_poll_s, 1.0):
                return True
            try:
                async with asyncio.timeout(5):
                    await conn.execute(text("SELECT 1"))
                    await conn.commit()
                self._lock_checked = now
                return True
            except Exception as exc:  # noqa: BLE001 - the lock is lost with its connection
                log.warning("outbox relay lost its leader connection; stepping down",
                            extra={"service": self.ctx.service, "error": repr(exc)})
                await self._step_down()
                return False
        conn = await self.engine.connect()
        try:
            got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k), pg_backend_pid()"),
                                      {"k": self.lock_key})).one()
            await conn.commit()
        except BaseException:
            await conn.invalidate()
            raise
        if not got[0]:
            await conn.close()
            return False
        self._lock_conn = conn
        self.lock_pid = int(got[1])
        self._lock_checked = time.monotonic()
        # Commits in the service's other processes ring this connection (NOTIFY), so their
        # events go out at once rather than at the next poll.
        driver = (await conn.get_raw_connection()).driver_connection
        if driver is not None:
            await driver.add_listener(relay_channel(self.ctx.tables.schema), self._rung)
        self.ctx.relay_leads = True
        log.info("outbox relay is the leader", extra={"service": self.ctx.service,
                                                     "pid": self.lock_pid})
        return True

    def _rung(self, *_: object) -> None:
        self.ctx.wake_relay.set()

    async def _step_down(self) -> None:
        """Give the lock up: the connection is closed, not pooled, so Postgres drops it
        (and its LISTEN with it)."""
        self.ctx.relay_leads = False
        conn, self._lock_conn, self.lock_pid = self._lock_conn, None, None
        if conn is not None:
            await _discard(conn)

    async def drain_once(self) -> int:
        """Claim, publish and mark one window of rows; return how many were published.

        A row the producer or broker refuses for good (`refused_for_good`) is parked with
        its reason and removed from the outbox in the same transaction; the rest of the
        window is still published, in id order.
        """
        schema = self.ctx.tables.schema
        self._claimed = 0
        async with self.ctx.sessionmaker() as session, session.begin():
            # Claimed, read and marked published in one statement; the mark (the ids deleted
            # from outbox_unpublished) commits only once the broker acknowledged every row
            # (a failure rolls it back, and the rows stay unpublished). Plain FOR UPDATE,
            # not SKIP LOCKED: a relay that is no longer the leader but still holds a
            # claimed window is waited for, never overtaken (per-key order).
            result = await session.execute(
                text(
                    # `= ANY(ARRAY(...))`: the window is chosen and locked once, and each
                    # table is read by its primary key whatever the planner thinks of their
                    # sizes (a join read the whole of a churned outbox_unpublished per window).
                    f'WITH claimed AS (DELETE FROM "{schema}".outbox_unpublished WHERE id = '
                    f'ANY(ARRAY(SELECT id FROM "{schema}".outbox_unpublished ORDER BY id '
                    "LIMIT :n FOR UPDATE)) RETURNING id) "
                    "SELECT o.id, o.topic, o.key, o.value, o.headers::text AS headers, "
                    f'o.event_type FROM "{schema}".outbox o WHERE o.id = '
                    "ANY(ARRAY(SELECT id FROM claimed)) ORDER BY o.id"
                ),
                {"n": self.batch},
            )
            rows = result.all()
            if not rows:
                return 0
            self._claimed = len(rows)
            sent, refused = await self._publish(rows)
            results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
            failed = [(group, r) for (group, _), r in zip(sent, results, strict=True)
                      if isinstance(r, BaseException)]
            for _, error in failed:
                if refused_for_good(error) is None:
                    raise error
            # The broker refused a batch for good: each of its records alone, so only the
            # one it refuses is parked.
            for group, _ in failed:
                for row in group:
                    try:
                        await (await self._send(row))
                    except Exception as exc:
                        error_type = refused_for_good(exc)
                        if error_type is None:
                            raise
                        refused.append((row, error_type, exc))
            refused_ids = {row.id for row, _, _ in refused}
            published = [row for row in rows if row.id not in refused_ids]
            for row, error_type, cause in refused:
                await park(self.ctx, stage="publish", topic=row.topic, error_type=error_type,
                           reason=f"{type(cause).__name__}: {cause}", key=row.key, value=row.value,
                           headers=self._record_headers(row),
                           event_type=row.event_type, outbox_id=row.id, session=session)
            if refused_ids:
                ids = bindparam("ids", type_=ARRAY(BigInteger))
                await session.execute(
                    text(f'DELETE FROM "{schema}".outbox WHERE id = ANY(:ids)').bindparams(ids),
                    {"ids": sorted(refused_ids)},
                )
        for event_type, count in Counter(row.event_type for row in published).items():
            metrics.child(metrics.PUBLISHED, self.ctx.service, event_type).inc(count)
        self.published += len(published)
        self.parked += len(refused)
        return len(published)

    @staticmethod
    def _record_headers(row: Any) -> list[tuple[str, bytes | None]]:
        """The Kafka headers of a row claimed with `headers::text`: nearly every row has the
        same few, so each distinct text is decoded once."""
        return list(_decoded_headers(row.headers))

    async def _publish(self, rows: Sequence[Any],
                       ) -> tuple[list[tuple[list[Any], asyncio.Future[Any]]],
                                  list[tuple[Any, str, BaseException]]]:
        """Queue every row on the producer, in id order; nothing is awaited but queuing.

        Rows go in one record batch per partition (`send_batch`): about half the CPU per
        record of sending each alone (15 µs against 25 to 34 µs measured). Each partition's
        batches are queued in row order, so a key's events keep their order. A row too big
        for a batch goes alone through `send` (which refuses it before queuing when it is
        over the producer's limit), after the batches before it. Returns (rows,
        acknowledgement) per batch or single record, and the rows refused for good before
        queuing.
        """
        window = _Window(self.producer)
        refused: list[tuple[Any, str, BaseException]] = []
        hashes = iter(murmur2_many([row.key for row in rows if row.key is not None]))
        for row in rows:
            hashed = next(hashes) if row.key is not None else None
            try:
                size = len(row.key or b"") + len(row.value or b"")
                if (row.key is None and row.value is None) or size > SINGLE_RECORD_FROM:
                    await window.flush()
                    window.sent.append(([row], await self._send(row)))
                else:
                    await window.add(row, self.topic_prefix + row.topic,
                                     self._record_headers(row), hashed)
            except Exception as exc:
                error_type = refused_for_good(exc)  # an invalid topic, a record too large
                if error_type is None:
                    raise
                refused.append((row, error_type, exc))
        await window.flush()
        return window.sent, refused

    async def _send(self, row: Any) -> asyncio.Future[Any]:
        if row.key is None and row.value is None:
            raise EmptyRecord("a record needs a key or a value")
        fut: asyncio.Future[Any] = await self.producer.send(
            self.topic_prefix + row.topic, value=row.value, key=row.key,
            headers=self._record_headers(row),
        )
        return fut

    async def _update_backlog(self) -> None:
        async with self.ctx.sessionmaker() as session:
            count = (
                await session.execute(
                    text(f'SELECT count(*) FROM "{self.ctx.tables.schema}".outbox_unpublished')
                )
            ).scalar_one()
        metrics.OUTBOX_BACKLOG.labels(self.ctx.service).set(count)

    async def _prune(self) -> None:
        try:
            await prune(self.ctx)
        except Exception as exc:  # noqa: BLE001 - pruning waits for its next turn
            log.warning("retention pruning failed", extra={"service": self.ctx.service,
                                                          "error": repr(exc)})


# ------------------------------------------------------------------ retention

#: Rows deleted per statement while pruning (short transactions, no long locks).
PRUNE_CHUNK = 10_000
#: Below this many rows (by the planner's estimate) tables are counted exactly.
EXACT_COUNT_BELOW = 100_000
DAY_S = 86_400.0


@dataclass(frozen=True)
class Pruned:
    """Rows deleted by one `prune`."""

    outbox: int
    inbox: int
    parked: int
    records: int = 0


async def _delete_chunked(ctx: ServiceContext, sql: str, params: dict[str, Any]) -> int:
    """Run a `DELETE ... LIMIT :n`-shaped statement until it deletes fewer than a chunk."""
    total = 0
    while True:
        async with ctx.sessionmaker() as session, session.begin():
            result: Any = await session.execute(text(sql), {**params, "n": PRUNE_CHUNK})
            deleted = int(result.rowcount or 0)
        total += deleted
        if deleted < PRUNE_CHUNK:
            return total


async def prune(ctx: ServiceContext) -> Pruned:
    """Delete what is past retention, then refresh the table-size metrics."""
    s = ctx.tables.schema
    settings = ctx.settings
    outbox_s = settings.outbox_retention_days * DAY_S
    inbox_s = settings.inbox_retention_days * DAY_S
    outbox = await _delete_chunked(
        ctx,
        f'DELETE FROM "{s}".outbox WHERE id IN (SELECT o.id FROM "{s}".outbox o '
        "WHERE o.created_at < now() - make_interval(secs => :secs) AND NOT EXISTS "
        f'(SELECT 1 FROM "{s}".outbox_unpublished u WHERE u.id = o.id) LIMIT :n)',
        {"secs": outbox_s},
    )
    inbox = await _delete_chunked(
        ctx,
        f'DELETE FROM "{s}".inbox WHERE ctid = ANY(ARRAY(SELECT ctid FROM "{s}".inbox '
        "WHERE received_at < now() - make_interval(secs => :secs) LIMIT :n))",
        {"secs": inbox_s},
    )
    parked = await _delete_chunked(
        ctx,
        f'DELETE FROM "{s}".parked WHERE id IN (SELECT id FROM "{s}".parked '
        "WHERE retried_at < now() - make_interval(secs => :secs) LIMIT :n)",
        {"secs": outbox_s},
    )
    records = 0
    for table, column in ctx.retained:
        records += await _delete_chunked(
            ctx,
            f'DELETE FROM "{s}"."{table}" WHERE ctid = ANY(ARRAY(SELECT ctid FROM '
            f'"{s}"."{table}" WHERE "{column}" < now() - make_interval(secs => :secs) '
            "LIMIT :n))",
            {"secs": settings.record_retention_days * DAY_S},
        )
    pruned = Pruned(outbox=outbox, inbox=inbox, parked=parked, records=records)
    if outbox or inbox or parked or records:
        log.info("pruned rows past retention", extra={"service": ctx.service,
                                                      "outbox": outbox, "inbox": inbox,
                                                      "parked": parked, "records": records})
    await refresh_table_rows(ctx)
    return pruned


async def refresh_table_rows(ctx: ServiceContext) -> dict[str, int]:
    """Set `branchline_table_rows` (and the backlog) for the messaging tables.

    `outbox_unpublished` and `parked` are exact (small tables); the
    retained outbox and the inbox are the planner's estimate once they are large.
    """
    s = ctx.tables.schema
    async with ctx.sessionmaker() as session:
        async def scalar(sql: str, **params: Any) -> Any:
            return (await session.execute(text(sql), params)).scalar_one_or_none()

        async def estimate(table: str, exact_sql: str) -> int:
            tuples = await scalar(
                "SELECT c.reltuples FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relname = :t",
                s=s, t=table)
            if tuples is None or tuples < EXACT_COUNT_BELOW:  # -1: never analysed
                return int(await scalar(exact_sql))
            return int(tuples)

        unpublished = int(await scalar(
            f'SELECT count(*) FROM "{s}".outbox_unpublished'))
        outbox_total = await estimate("outbox", f'SELECT count(*) FROM "{s}".outbox')
        counts = {
            "outbox_unpublished": unpublished,
            "outbox_retained": max(0, outbox_total - unpublished),
            "inbox": await estimate("inbox", f'SELECT count(*) FROM "{s}".inbox'),
            "parked": int(await scalar(f'SELECT count(*) FROM "{s}".parked')),
        }
        for table, _ in ctx.retained:
            counts[table] = await estimate(table, f'SELECT count(*) FROM "{s}"."{table}"')
    for table, n in counts.items():
        metrics.TABLE_ROWS.labels(ctx.service, table).set(n)
    metrics.OUTBOX_BACKLOG.labels(ctx.service).set(unpublished)
    return counts
