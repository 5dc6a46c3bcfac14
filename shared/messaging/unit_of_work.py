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
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

from pydantic import TypeAdapter
from sqlalchemy import JSON, Column, String, Table, any_, bindparam, event, insert, inspect, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import ORMExecuteState, Session, make_transient_to_detached
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
_STR: Callable[[str], str] = _DUMPS  # one text as a JSON string

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


@dataclass(frozen=True)
class _Column:
    """How one column of a table written in bulk is written, worked out once per table."""

    attribute: str  # where the row keeps its value
    name: str  # the column's name in the table
    #: A None value is left out of the INSERT (a serial key, a server or column default:
    #: what the database fills in, as the ORM does).
    filled: bool
    array: str  # the array type its values are sent as, cast to the column's type
    json: bool  # values go as JSON text


def _insert_shape(model: type[Any]) -> tuple[Table, list[_Column]]:
    shape = _SHAPES.get(model)
    if shape is None:
        columns: list[_Column] = []
        for prop in inspect(model).column_attrs:
            column: Column[Any] = prop.columns[0]
            filled = column.server_default is not None or column.default is not None or (
                column.primary_key and column.autoincrement is not False
                and column.type.python_type is int)
            sql_type = column.type.compile(dialect=_POSTGRES)
            is_json = isinstance(column.type, JSON)
            columns.append(_Column(prop.key, column.name, filled,
                                   f"text[]::{sql_type}[]" if is_json else f"{sql_type}[]",
                                   is_json))
        shape = _SHAPES[model] = (cast(Table, model.__table__), columns)
    return shape


_SHAPES: dict[type[Any], tuple[Table, list[_Column]]] = {}
_POSTGRES = postgresql.dialect()  # type: ignore[no-untyped-call]


class BulkInserts:
    """New rows of `inserted_in_bulk` tables (shared/service/rows.py), written by one INSERT
    per table instead of the ORM's per-row flush.

    At the end of a unit of work they go in the same statement as its outbox rows (one
    round trip, column arrays), after the ORM's own changes (an update closing a row comes
    before the insert replacing it, as a partial unique index needs). A statement the
    session runs before that writes them first, so a query in the middle of a unit of work
    sees them; a row written in the middle is attached to the session, so later changes to
    it are flushed as usual.
    """

    def __init__(self) -> None:
        self.rows: list[SQLModel] = []
        #: Set for the unit of work's last flush: the rows then wait for `take`.
        self.final = False

    def _grouped(self) -> dict[tuple[Table, tuple[_Column, ...]], list[dict[str, Any]]]:
        """The pending rows (taken) by table and by the columns they give, as values by
        column name."""
        rows, self.rows = self.rows, []
        groups: dict[tuple[Table, tuple[_Column, ...]], list[dict[str, Any]]] = {}
        for row in rows:
            table, columns = _insert_shape(type(row))
            values = row.__dict__
            given = tuple(c for c in columns
                          if not (c.filled and values.get(c.attribute) is None))
            groups.setdefault((table, given), []).append(
                {c.name: values.get(c.attribute) for c in given})
        return groups

    def write(self, session: Session) -> None:
        """Write the rows now, in the middle of the unit of work, and attach them."""
        if self.final or not self.rows:
            return
        rows = list(self.rows)
        connection = session.connection()
        for (table, _), params in self._grouped().items():
            connection.execute(insert(table), params)
        for row in rows:
            # A row keyed by a serial has no key here; such tables are append-only.
            if inspect(row).mapper.primary_key_from_instance(row)[0] is not None:
                make_transient_to_detached(row)
                session.add(row)

    def take(self, first_parameter: int) -> tuple[list[str], list[Any]]:
        """The rows as `INSERT ... SELECT * FROM unnest($n::type[], ...)` statements (one
        per table and column set), numbered from `$first_parameter`, and their arrays."""
        statements: list[str] = []
        arrays: list[Any] = []
        for (table, columns), values in self._grouped().items():
            casts = []
            for column in columns:
                column_values = [v[column.name] for v in values]
                if column.json:  # as text, as the outbox's headers
                    column_values = [None if x is None else json.dumps(x)
                                     for x in column_values]
                arrays.append(column_values)
                casts.append(f"${first_parameter + len(arrays) - 1}::{column.array}")
            statements.append(
                f'INSERT INTO "{table.schema}"."{table.name}" '
                f"({', '.join(c.name for c in columns)}) SELECT * FROM unnest({', '.join(casts)})")
        return statements, arrays


class SqlRepository(Repository[M]):
    def __init__(self, session: AsyncSession, model: type[M],
                 bulk: BulkInserts | None = None) -> None:
        self.session = session
        self.model = model
        self._bulk = bulk if getattr(model, "inserted_in_bulk", False) else None
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
        if self._bulk is not None:
            self._bulk.rows.append(row)
        else:
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
        if self._bulk is not None and any(r is row for r in self._bulk.rows):
            self._bulk.rows = [r for r in self._bulk.rows if r is not row]
        else:
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

    def emit(self, data: Event, *, subject: str, cause: Envelope | None = None) -> None:
        """Queue an event; its type and topic come from its payload class."""
        self.emitted.append(make_event(data, subject=subject, source=self.source, cause=cause))

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
        #: Outbox rows, each queued as bytes already (emitted, forwarded, dead-lettered), in
        #: the order they were queued; `emitted` stays empty here.
        self._raw_rows: list[dict[str, Any]] = []
        # The identity map holds rows weakly; rows a batch's prefetch loaded must stay in it
        # so handlers' lookups find them instead of querying (and autoflushing) per event.
        self._held: list[object] = []
        event.listen(self.session.sync_session, "loaded_as_persistent",
                     lambda _session, instance: self._held.append(instance))
        self._connected = False  # whether the session has taken a connection yet
        event.listen(self.session.sync_session, "after_begin", self._on_begin)
        self.bulk = BulkInserts()
        event.listen(self.session.sync_session, "after_flush_postexec", self._after_flush)
        event.listen(self.session.sync_session, "do_orm_execute", self._before_statement)

    def _on_begin(self, *_: Any) -> None:
        self._connected = True

    def _after_flush(self, session: Session, _context: Any) -> None:
        self.bulk.write(session)

    def _before_statement(self, state: ORMExecuteState) -> None:
        if self.bulk.rows and not self.bulk.final:
            state.session.flush()  # the ORM's changes first; its hook writes the rows
            self.bulk.write(state.session)  # no ORM change: nothing was flushed

    async def __aenter__(self) -> SqlUnitOfWork:
        await self.session.begin()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                session = self.session
                if self._connected or session.new or session.dirty or session.deleted \
                        or self.bulk.rows:
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
            found = self._repos[model] = SqlRepository(self.session, model, self.bulk)
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
        self._raw_rows.append({
            "topic": dead_letter_topic(self.ctx.service),
            "key": key,
            "value": value,
            "headers": encode_headers([*headers, *extra]),
            "event_type": f"dlq:{error_type}",
        })
        metrics.DEAD_LETTERED.labels(self.ctx.service, error_type).inc()
        log.warning(
            "dead-lettered record",
            extra={"topic": topic, "partition": partition, "offset": offset,
                   "error_type": error_type, "error": error},
        )

    def queued_rows(self) -> list[dict[str, Any]]:
        """The outbox rows queued since the last flush, in the order they were queued."""
        return list(self._raw_rows)

    def _outbox_rows(self) -> list[dict[str, Any]]:
        rows, self._raw_rows = self._raw_rows, []
        return rows

    def emit_bulk(self, event: type[Event],
                  payloads: Iterable[tuple[str, dict[str, Any]]]) -> None:
        topic, event_type = EVENTS[event.event_type].topic, event.event_type
        time = _JSON_TIME.dump_python(utcnow(), mode="json")
        dumps = _DUMPS
        for subject, payload in payloads:
            # The fields in the envelope's own order, as `Envelope.to_bytes` writes them.
            envelope = {"specversion": "1.0", "id": new_id(), "source": self.source,
                        "type": event_type, "time": time, "subject": subject,
                        "datacontenttype": "application/json", "schemaversion": 1,
                        "data": {k: v for k, v in payload.items() if v is not None}}
            self._raw_rows.append({
                "topic": topic, "key": subject.encode(), "value": dumps(envelope).encode(),
                "headers": _CONTENT_TYPE_HEADERS, "event_type": event_type})

    def emit(self, data: Event, *, subject: str, cause: Envelope | None = None) -> None:
        """Queue the event's outbox row at once: its JSON written straight from the payload,
        without an envelope model (a check-in emits three, at about 6 µs each instead of
        12). The fields come in the envelope's own order, `data` last, as
        `Envelope.to_bytes` writes them; every text not fixed here is JSON-escaped."""
        chain = "" if cause is None else (
            f',"correlationid":{_STR(cause.correlationid or cause.id)}'
            f',"causationid":{_STR(cause.id)}')
        time = _JSON_TIME.dump_python(utcnow(), mode="json")
        value = (f'{{"specversion":"1.0","id":"{new_id()}","source":{_STR(self.source)},'
                 f'"type":"{data.event_type}","time":"{time}",'
                 f'"subject":{_STR(subject)},"datacontenttype":"application/json",'
                 f'"schemaversion":1{chain},"data":{data.model_dump_json(exclude_none=True)}}}')
        self._raw_rows.append({
            "topic": data.topic, "key": subject.encode(), "value": value.encode(),
            "headers": _CONTENT_TYPE_HEADERS, "event_type": data.event_type})

    def forward(self, *, topic: str, key: bytes, value: bytes, event_type: str,
                headers: Sequence[tuple[str, bytes | None]] = ()) -> None:
        """Queue a record exactly as given (no new envelope): an accepted ingress event.

        It is published by the relay like any event of this service, so it is durable
        from the commit on, whatever the broker is doing.
        """
        self._raw_rows.append({
            "topic": topic, "key": key, "value": value, "event_type": event_type,
            "headers": encode_headers(
                [("content-type", CONTENT_TYPE.encode()), *headers]),
        })

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
            await self._write_last(driver, rows)
        return len(rows)

    async def _write_last(self, driver: Any, rows: list[dict[str, Any]]) -> None:
        """The pending bulk rows and the outbox rows in one statement: each table's INSERT
        a data-modifying `WITH` part of the last INSERT (the outbox rows' ids into
        `outbox_unpublished`, for the relay)."""
        statements, arrays = self.bulk.take(1)
        if rows:
            n, schema = len(arrays), self.ctx.tables.schema
            statements.append(
                f'INSERT INTO "{schema}".outbox (topic, key, value, headers, '
                f"event_type) SELECT * FROM unnest(${n + 1}::text[], ${n + 2}::bytea[], "
                f"${n + 3}::bytea[], ${n + 4}::text[]::jsonb[], ${n + 5}::text[]) RETURNING id")
            statements.append(f'INSERT INTO "{schema}".outbox_unpublished (id) '
                              f"SELECT id FROM w{len(statements) - 1}")
            arrays += [[r["topic"] for r in rows], [r["key"] for r in rows],
                       [r["value"] for r in rows],
                       [_CONTENT_TYPE_JSON if r["headers"] is _CONTENT_TYPE_HEADERS
                        else json.dumps(r["headers"]) for r in rows],
                       [r["event_type"] for r in rows]]
        if not statements:
            return
        *parts, last = statements
        with_ = "WITH " + ", ".join(f"w{i} AS ({p})" for i, p in enumerate(parts)) + " "
        await driver.execute((with_ if parts else "") + last, *arrays)

    async def flush_outbox(self) -> int:
        """The ORM's changes, then the rows written in bulk and the queued events in one
        statement (arrays, not one row per statement)."""
        rows = self._outbox_rows()
        self.bulk.final = True  # the end of the unit of work: the rows wait for that statement
        await self.session.flush()
        conn = await self.session.connection()
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        # Outside a transaction when nothing has run in this one: then this one statement
        # is the whole unit of work, atomic on its own.
        await self._write_last(driver, rows)
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
