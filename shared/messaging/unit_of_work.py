"""The unit of work: one transaction holding state changes, inbox rows and outgoing events.

Handlers see an abstract `UnitOfWork` (repositories plus `emit`), so their rules can be
unit-tested against in-memory fakes; `SqlUnitOfWork` is the real one, over one Postgres
transaction whose outbox rows the relay publishes only once it commits.
"""

from __future__ import annotations

import abc
import json
import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

from pydantic import TypeAdapter
from sqlalchemy import String, any_, bindparam, event, insert, inspect, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.contracts import (
    CONTENT_TYPE,
    EVENTS,
    Envelope,
    Event,
    dead_letter_topic,
    make_event,
    new_id,
    utcnow,
)
from shared.messaging.outbox import ServiceContext, encode_headers
from shared.service import metrics
from shared.service.settings import Settings

log = logging.getLogger(__name__)

_CONTENT_TYPE_HEADERS = encode_headers([("content-type", CONTENT_TYPE.encode())])
_CONTENT_TYPE_JSON = json.dumps(_CONTENT_TYPE_HEADERS)  # nearly every row's, written once
#: Event times as the envelope's JSON has them (pydantic's form), and compact JSON.
_JSON_TIME: TypeAdapter[datetime] = TypeAdapter(datetime)
_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

M = TypeVar("M", bound=SQLModel)
T = TypeVar("T")


class Repository(abc.ABC, Generic[M]):
    """The rows of one table, by key, loaded at most once per unit of work."""

    @abc.abstractmethod
    async def get(self, key: Any) -> M | None:
        """The row with this primary key, or None."""

    @abc.abstractmethod
    async def load(self, keys: Iterable[Any], *, lock: bool = False) -> None:
        """Load many rows by primary key in one go (a batch's prefetch); misses remembered.

        `lock` takes the rows' write locks in key order: every replica that changes an
        aggregate loads it this way first, so two transactions on one item take turns.
        """

    @abc.abstractmethod
    async def find(self, field: str, values: Iterable[Any], *,
                   lock: bool = False) -> dict[Any, M]:
        """Rows whose unique `field` is one of `values`, keyed by that field.

        Hits and misses are remembered for the unit of work, rows added through `add` are
        found too, so a batch asks the database once per table. `lock` takes the rows'
        write locks (FOR UPDATE, in key order) where two transactions may race for them.
        """

    async def get_by(self, field: str, value: Any) -> M | None:
        """The row whose unique `field` is `value`, or None."""
        return (await self.find(field, [value])).get(value)

    @abc.abstractmethod
    def add(self, row: M) -> None:
        """A new row, written when the unit of work commits."""

    @abc.abstractmethod
    async def put(self, row: M) -> M:
        """Insert or replace the row with the same primary key (a read model's upsert)."""

    @abc.abstractmethod
    async def remove(self, row: M) -> None:
        """Delete the row when the unit of work commits (a read model dropping an entry)."""


#: Up to this many values a lookup is `IN (...)`, one bind parameter each; beyond it one
#: array parameter (`= ANY($1)`), since Postgres takes at most 32,767 parameters a statement
#: (a 100,000-record import looks up 100,000 ISBNs at once).
IN_LIST_LIMIT = 1_000


def one_of(column: Any, values: Collection[Any]) -> Any:
    """`column IN (...)` for a short list, `column = ANY($1)` for a long one."""
    if len(values) <= IN_LIST_LIMIT:
        return column.in_(values)
    return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))


class SqlRepository(Repository[M]):
    def __init__(self, session: AsyncSession, model: type[M]) -> None:
        self.session = session
        self.model = model
        [pk] = inspect(model).primary_key
        self.pk = pk.key
        self._known: dict[Any, M | None] = {}
        self._by_field: dict[str, dict[Any, M | None]] = {}

    async def get(self, key: Any) -> M | None:
        if key in self._known:
            return self._known[key]
        row = await self.session.get(self.model, key)
        self._known[key] = row
        return row

    async def load(self, keys: Iterable[Any], *, lock: bool = False) -> None:
        missing = {k for k in keys if k not in self._known}
        if not missing:
            return
        column = col(getattr(self.model, self.pk))
        query = select(self.model).where(one_of(column, missing))
        if lock:
            query = query.order_by(column).with_for_update()
        rows = (await self.session.exec(query)).all()
        self._known.update(dict.fromkeys(missing))
        self._known.update({getattr(r, self.pk): r for r in rows})

    async def find(self, field: str, values: Iterable[Any], *,
                   lock: bool = False) -> dict[Any, M]:
        known = self._by_field.setdefault(field, {})
        wanted = set(values)
        missing = {v for v in wanted if v not in known}  # not `wanted - known.keys()`: O(known)
        if missing:
            column = col(getattr(self.model, field))
            query = select(self.model).where(one_of(column, missing))
            if lock:
                query = query.order_by(col(getattr(self.model, self.pk))).with_for_update()
            rows = (await self.session.exec(query)).all()
            known.update(dict.fromkeys(missing))
            for row in rows:
                known[getattr(row, field)] = row
                self._known.setdefault(getattr(row, self.pk), row)
        return {v: hit for v in wanted if (hit := known[v]) is not None}

    def add(self, row: M) -> None:
        self.session.add(row)
        self._known[getattr(row, self.pk)] = row
        for field, known in self._by_field.items():
            value = getattr(row, field)
            if value is not None:
                known[value] = row

    async def put(self, row: M) -> M:
        key = getattr(row, self.pk)
        if key in self._known and self._known[key] is None:  # loaded and known absent
            self.add(row)
            return row
        merged = await self.session.merge(row)
        self._known[getattr(merged, self.pk)] = merged
        return merged

    async def remove(self, row: M) -> None:
        await self.session.delete(row)
        self._known[getattr(row, self.pk)] = None
        for field, known in self._by_field.items():
            if known.get(getattr(row, field)) is row:
                known[getattr(row, field)] = None


class UnitOfWork(abc.ABC):
    """What a handler may do: read and write rows through repositories, and emit events.

    Events emitted are published if, and only if, the unit of work commits.
    """

    def __init__(self, source: str, settings: Settings) -> None:
        self.source = source
        #: The service's settings, for rules that depend on the deployment (its center).
        self.settings = settings
        self.emitted: list[Envelope] = []
        self._local: dict[type[Any], Any] = {}

    def local(self, kind: type[T], make: Callable[[], T]) -> T:
        """State a service keeps for this unit of work only (made on first use, by type).

        For what a batch's prefetch prepares for its handlers beyond rows, such as a pool
        of barcode serials reserved in one round trip.
        """
        found = self._local.get(kind)
        if found is None:
            found = self._local[kind] = make()
        return cast(T, found)

    @abc.abstractmethod
    def repo(self, model: type[M]) -> Repository[M]:
        """The repository of one table, the same object for the whole unit of work."""

    def emit(self, data: Event, *, subject: str, cause: Envelope | None = None) -> Envelope:
        """Queue an event; its type and topic come from its payload class."""
        envelope = make_event(data, subject=subject, source=self.source, cause=cause)
        self.emitted.append(envelope)
        return envelope

    def emit_bulk(self, event: type[Event],
                  payloads: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Queue one `event` per (subject, payload), in order, after those emitted before.

        For bulk work whose payloads are plain JSON values built from parts checked
        already (an import announces every bib it makes or changes): nothing is validated
        again. Here each goes through `emit`; the SQL unit of work writes the envelopes'
        JSON at once, without a model per event (~5 µs an event against ~25).
        """
        for subject, payload in payloads:
            self.emit(event.model_construct(**payload), subject=subject)


class SqlUnitOfWork(UnitOfWork):
    """One Postgres transaction: state changes, inbox rows and outbox rows commit together."""

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx.source, ctx.settings)
        self.ctx = ctx
        self.session: AsyncSession = ctx.sessionmaker()
        self._repos: dict[type[Any], SqlRepository[Any]] = {}
        #: Outbox rows queued as bytes already (forwarded, dead-lettered, emitted in bulk),
        #: each with how many events `emit` had queued before it: rows keep queue order.
        self._raw_rows: list[tuple[int, dict[str, Any]]] = []
        self._queued = 0  # emitted events already written to the outbox
        # The identity map holds rows weakly; rows a batch's prefetch loaded must stay in it
        # so handlers' lookups find them instead of querying (and autoflushing) per event.
        self._held: list[object] = []
        event.listen(self.session.sync_session, "loaded_as_persistent",
                     lambda _session, instance: self._held.append(instance))
        self._connected = False  # whether the session has taken a connection yet
        event.listen(self.session.sync_session, "after_begin", self._on_begin)

    def _on_begin(self, *_: Any) -> None:
        self._connected = True

    async def __aenter__(self) -> SqlUnitOfWork:
        await self.session.begin()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                session = self.session
                if self._connected or session.new or session.dirty or session.deleted:
                    wrote = await self.flush_outbox()
                    await session.commit()
                else:
                    wrote = await self._outbox_alone()
                if wrote:
                    if self.ctx.relay_leads:
                        self.ctx.wake_relay.set()
                    else:  # the leader is another process: the bell rings it (RelayBell)
                        self.ctx.committed.set()
            else:
                await self.session.rollback()
        finally:
            await self.session.close()

    def repo(self, model: type[M]) -> SqlRepository[M]:
        found = self._repos.get(model)
        if found is None:
            found = self._repos[model] = SqlRepository(self.session, model)
        return found

    def dead_letter(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes | None]],
        error: str,
        error_type: str,
    ) -> None:
        """Send the original record, unchanged, to dlq.<service> with the reason headers."""
        extra = [
            # A reason may quote a record's text (a lone surrogate is not UTF-8): escape it.
            ("error", error[:2000].encode("utf-8", "backslashreplace")),
            ("error-type", error_type.encode("utf-8", "backslashreplace")),
            ("original-topic", topic.encode()),
            ("original-partition", str(partition).encode()),
            ("original-offset", str(offset).encode()),
        ]
        self._raw_rows.append((len(self.emitted), {
            "topic": dead_letter_topic(self.ctx.service),
            "key": key,
            "value": value,
            "headers": encode_headers([*headers, *extra]),
            "event_type": f"dlq:{error_type}",
        }))
        metrics.DEAD_LETTERED.labels(self.ctx.service, error_type).inc()
        log.warning(
            "dead-lettered record",
            extra={"topic": topic, "partition": partition, "offset": offset,
                   "error_type": error_type, "error": error},
        )

    def _outbox_rows(self) -> list[dict[str, Any]]:
        """The rows queued since the last flush, in the order they were queued."""
        rows: list[dict[str, Any]] = []
        raw, taken = self._raw_rows, 0
        for at in range(self._queued, len(self.emitted)):
            while taken < len(raw) and raw[taken][0] <= at:  # queued before emitted[at]
                rows.append(raw[taken][1])
                taken += 1
            env = self.emitted[at]
            rows.append({"topic": EVENTS[env.type].topic, "key": env.subject.encode(),
                         "value": env.to_bytes(), "headers": _CONTENT_TYPE_HEADERS,
                         "event_type": env.type})
        rows.extend(row for _, row in raw[taken:])
        self._queued = len(self.emitted)
        self._raw_rows = []
        return rows

    def emit_bulk(self, event: type[Event],
                  payloads: Iterable[tuple[str, dict[str, Any]]]) -> None:
        topic, event_type = EVENTS[event.event_type].topic, event.event_type
        time = _JSON_TIME.dump_python(utcnow(), mode="json")
        dumps, position = _DUMPS, len(self.emitted)
        for subject, payload in payloads:
            # The fields in the envelope's own order, as `Envelope.to_bytes` writes them.
            envelope = {"specversion": "1.0", "id": new_id(), "source": self.source,
                        "type": event_type, "time": time, "subject": subject,
                        "datacontenttype": "application/json", "schemaversion": 1,
                        "data": {k: v for k, v in payload.items() if v is not None}}
            self._raw_rows.append((position, {
                "topic": topic, "key": subject.encode(), "value": dumps(envelope).encode(),
                "headers": _CONTENT_TYPE_HEADERS, "event_type": event_type}))

    def forward(self, *, topic: str, key: bytes, value: bytes, event_type: str,
                headers: Sequence[tuple[str, bytes | None]] = ()) -> None:
        """Queue a record exactly as given (no new envelope): an accepted ingress event.

        It is published by the relay like any event of this service, so it is durable
        from the commit on, whatever the broker is doing.
        """
        self._raw_rows.append((len(self.emitted), {
            "topic": topic, "key": key, "value": value, "event_type": event_type,
            "headers": encode_headers(
                [("content-type", CONTENT_TYPE.encode()), *headers]),
        }))

    async def _outbox_alone(self) -> int:
        """Write the queued events as the only statement of the unit of work.

        A use case that read and changed nothing (a desk's batch of branch events, only
        forwarded) needs no BEGIN and COMMIT around its one INSERT: a single statement is
        atomic on its own. One round trip instead of three, on the path a desk waits on.
        """
        rows = self._outbox_rows()
        if not rows:
            return 0
        engine: AsyncEngine = self.ctx.sessionmaker.kw["bind"]
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            await self._insert_outbox(driver, rows)
        return len(rows)

    async def _insert_outbox(self, driver: Any, rows: list[dict[str, Any]]) -> None:
        await driver.execute(
            f'INSERT INTO "{self.ctx.tables.schema}".outbox (topic, key, value, headers, '
            "event_type) SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], "
            "$4::text[]::jsonb[], $5::text[])",
            [r["topic"] for r in rows], [r["key"] for r in rows], [r["value"] for r in rows],
            [_CONTENT_TYPE_JSON if r["headers"] is _CONTENT_TYPE_HEADERS
             else json.dumps(r["headers"]) for r in rows], [r["event_type"] for r in rows],
        )

    async def flush_outbox(self) -> int:
        """Insert the queued events in one statement (arrays, not one row per statement)."""
        rows = self._outbox_rows()
        if not rows:
            return 0
        await self.session.flush()
        conn = await self.session.connection()
        driver = (await conn.get_raw_connection()).driver_connection
        if driver is None or not driver.is_in_transaction():
            # Nothing has run in this transaction yet: let SQLAlchemy open it.
            await self.session.execute(insert(self.ctx.tables.outbox), rows)
            return len(rows)
        await self._insert_outbox(driver, rows)
        return len(rows)

    async def claim_inbox(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Insert inbox keys; return those not seen before (the ones to handle)."""
        if not keys:
            return set()
        inbox = self.ctx.tables.inbox
        stmt = text(
            f'INSERT INTO "{inbox.schema}".inbox (source, id) '
            "SELECT * FROM unnest(:sources, :ids) ON CONFLICT DO NOTHING RETURNING source, id"
        ).bindparams(
            bindparam("sources", type_=ARRAY(String)), bindparam("ids", type_=ARRAY(String))
        )
        result = await self.session.execute(
            stmt, {"sources": [k[0] for k in keys], "ids": [k[1] for k in keys]}
        )
        return {(row[0], row[1]) for row in result}
