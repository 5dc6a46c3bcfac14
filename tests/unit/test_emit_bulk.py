"""Events emitted in bulk are the events `emit` makes, rows keep the order queued, and
event ids are random UUIDs."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.contracts import new_id, parse_bytes
from shared.contracts.cataloging import BibUpserted
from shared.messaging.outbox import ServiceContext, outbox_tables
from shared.messaging.unit_of_work import SqlUnitOfWork
from tests.fakes import FakeUnitOfWork

PAYLOAD: dict[str, Any] = {
    "bib_id": "B1", "isbns": ["9787020024759"], "title": "围城", "author": "钱锺书",
    "publisher": None, "year": 1991, "language": "chi", "classification": "I246.57",
    "subjects": ["长篇小说"]}


def sql_uow() -> SqlUnitOfWork:
    """A unit of work whose queue is read without a database (nothing connects)."""
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none")
    ctx = ServiceContext("cataloging", outbox_tables("cataloging"),
                         async_sessionmaker(engine, class_=AsyncSession))
    return SqlUnitOfWork(ctx)


def without_id_and_time(value: bytes) -> dict[str, Any]:
    envelope = json.loads(value)
    assert envelope.pop("id") and envelope.pop("time")
    return dict(envelope)


def test_a_bulk_event_reads_as_the_one_emit_makes() -> None:
    uow = sql_uow()
    uow.emit(BibUpserted.model_validate(PAYLOAD), subject="B1")
    uow.emit_bulk(BibUpserted, [("B1", PAYLOAD)])
    one, bulk = uow._outbox_rows()
    assert without_id_and_time(bulk["value"]) == without_id_and_time(one["value"])
    assert {k: v for k, v in bulk.items() if k != "value"} == {
        k: v for k, v in one.items() if k != "value"}
    envelope, payload = parse_bytes(bulk["value"])  # as any consumer reads it
    assert isinstance(payload, BibUpserted) and payload.title == "围城"
    assert payload.publisher is None and "publisher" not in json.loads(bulk["value"])["data"]
    assert envelope.source == "branchline/cataloging" and envelope.time.utcoffset() is not None
    assert "围城".encode() in bulk["value"]  # UTF-8, as pydantic writes it


def test_rows_keep_the_order_they_were_queued_in() -> None:
    uow = sql_uow()
    uow.emit(BibUpserted.model_validate({**PAYLOAD, "bib_id": "A"}), subject="A")
    uow.emit_bulk(BibUpserted, [("B", {**PAYLOAD, "bib_id": "B"}),
                                ("C", {**PAYLOAD, "bib_id": "C"})])
    uow.forward(topic="cataloging.bibs", key=b"D", value=b"{}", event_type="test.record")
    uow.emit(BibUpserted.model_validate({**PAYLOAD, "bib_id": "E"}), subject="E")
    uow.emit_bulk(BibUpserted, [("F", {**PAYLOAD, "bib_id": "F"})])
    assert [r["key"] for r in uow._outbox_rows()] == [b"A", b"B", b"C", b"D", b"E", b"F"]
    assert uow._outbox_rows() == []  # each row once
    uow.emit_bulk(BibUpserted, [("G", {**PAYLOAD, "bib_id": "G"})])
    uow.emit(BibUpserted.model_validate({**PAYLOAD, "bib_id": "H"}), subject="H")
    assert [r["key"] for r in uow._outbox_rows()] == [b"G", b"H"]


def test_the_in_memory_unit_of_work_emits_bulk_events_one_by_one() -> None:
    uow = FakeUnitOfWork("cataloging")
    uow.emit_bulk(BibUpserted, [("B1", PAYLOAD), ("B2", {**PAYLOAD, "bib_id": "B2"})])
    assert [(e.subject, e.data["bib_id"]) for e in uow.emitted] == [("B1", "B1"), ("B2", "B2")]
    assert "publisher" not in uow.emitted[0].data


def test_event_ids_are_random_rfc_4122_uuids() -> None:
    ids = [new_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
    # every variant nibble (8, 9, a, b) turns up: the random bits are not lost
    assert {text[19] for text in ids} == set("89ab")


def test_a_bulk_envelope_has_the_fields_in_the_order_emit_writes_them() -> None:
    uow = sql_uow()
    uow.emit(BibUpserted.model_validate(PAYLOAD), subject="B1")
    uow.emit_bulk(BibUpserted, [("B1", PAYLOAD)])
    one, bulk = uow._outbox_rows()
    assert list(json.loads(bulk["value"])) == list(json.loads(one["value"]))
