"""Every event type of the contract round-trips; bad payloads are rejected naming the field."""

from __future__ import annotations

import json

import pytest

from shared.contracts import (
    EVENTS,
    Envelope,
    Event,
    InvalidEvent,
    make_event,
    parse_bytes,
    payload_of,
)
from shared.contracts.branch import BranchCheckin
from shared.contracts.circulation import TransferRequested
from shared.contracts.registry import event
from shared.messaging.consumer import Handlers
from shared.messaging.outbox import ServiceContext, outbox_tables
from shared.messaging.unit_of_work import SqlUnitOfWork, UnitOfWork
from shared.service.db import make_engine, make_sessionmaker

T = "2026-11-22T10:00:00+08:00"
SITE = {
    "code": "JX-HN-01", "name": "Haining Library", "kind": "county", "lat": 30.53,
    "lon": 120.68, "hub": "JX-HUB", "opening_hours": {"mon": [["09:00", "17:00"]]},
    "courier_days": ["mon", "thu"], "floating_group": "north", "active": True,
}
SAMPLES: dict[str, dict] = {
    "branch.checkout": {"branch": "JX-HN-01", "barcode": "B1", "patron": "P1", "due": "2026-12-22"},
    "branch.checkin": {"branch": "JX-HN-01", "barcode": "B1"},
    "branch.renewal": {"branch": "JX-HN-01", "barcode": "B1", "patron": "P1"},
    "branch.hold_requested": {"branch": "JX-HN-01", "patron": "P1", "isbn": "9787020002207"},
    "branch.hold_cancelled": {"branch": "JX-HN-01", "patron": "P1", "hold_id": "H1"},
    "branch.item_missing": {"branch": "JX-HN-01", "barcode": "B1"},
    "acquisition.order_opened": {
        "order_id": "O1", "vendor_id": "V1", "fund_code": "F1", "currency": "CNY",
        "lines": [{"line_id": "L1", "isbn": "9787020002207", "title": "Fortress",
                   "unit_price": "38.50", "quantity": 3,
                   "distribution": [{"branch": "JX-HN-01", "copies": 2},
                                    {"branch": "JX-HY-01", "copies": 1}],
                   "fund_code": "F-KIDS"}],
        "part": 2, "parts": 3,
    },
    "acquisition.copies_received": {
        "order_id": "O1", "line_id": "L1", "isbn": "9787020002207", "title": "Fortress",
        "copies": [{"copy_id": "C1", "owning_branch": "JX-HN-01"}], "received_at": T,
        "part": 1, "parts": 1,
    },
    "acquisition.order_cancelled": {"order_id": "O1", "line_ids": ["L1"], "reason": "vendor",
                                    "lines": [{"line_id": "L1", "copies": 2}]},
    "acquisition.order_closed": {"order_id": "O1", "received": 3, "cancelled": 0},
    "cataloging.bib_upserted": {"bib_id": "BIB1", "isbns": ["9787020002207"], "title": "Fortress"},
    "cataloging.item_cataloged": {
        "barcode": "B1", "bib_id": "BIB1", "title": "Fortress", "call_number": "I247/Q1",
        "owning_branch": "JX-HN-01", "site": "JX-CENTRAL",
    },
    "cataloging.item_withdrawn": {"barcode": "B1", "reason": "damaged", "bib_id": "b1",
                                  "owning_branch": "JX-HN-01"},
    "circulation.item_checked_out": {"barcode": "B1", "branch": "JX-HN-01", "patron": "P1",
                                     "loan_id": "LN1", "due": "2026-12-22"},
    "circulation.item_checked_in": {"barcode": "B1", "branch": "JX-HN-01",
                                    "disposition": "transfer"},
    "circulation.item_status_changed": {"barcode": "B1", "bib_id": "BIB1", "status": "available",
                                        "site": "JX-HN-01", "owning_branch": "JX-HN-01"},
    "circulation.hold_placed": {"hold_id": "H1", "patron": "P1", "bib_id": "BIB1",
                                "pickup_branch": "JX-HN-01"},
    "circulation.hold_ready": {"hold_id": "H1", "barcode": "B1", "pickup_branch": "JX-HN-01",
                               "expires_on": "2026-11-29"},
    "circulation.hold_closed": {"hold_id": "H1", "outcome": "fulfilled"},
    "circulation.transfer_requested": {
        "transfer_id": "T1", "barcode": "B1", "from_site": "JX-HY-01", "to_site": "JX-HN-01",
        "reason": "return_home", "requested_at": T,
    },
    "circulation.transfer_cancelled": {"transfer_id": "T1", "barcode": "B1", "reason": "x"},
    "circulation.transfer_late": {"transfer_id": "T1", "barcode": "B1", "from_site": "JX-HY-01",
                                  "to_site": "JX-HN-01", "requested_at": T, "age_days": 3.5},
    "circulation.transfer_completed": {"transfer_id": "T1", "barcode": "B1", "site": "JX-HN-01"},
    "network.site_upserted": SITE,
    "network.vehicle_upserted": {
        "vehicle_id": "BV-01", "name": "Book van 1", "kind": "book_van", "depot": "JX-HUB",
        "capacity_crates": 20, "shift_start": "08:00", "shift_end": "17:00",
        "days": ["tue"], "site": "JX-BV-01",
        "timetable": [{"day": "tue", "week": 2,
                       "stops": [{"site": "JX-BS-01", "arrive": "09:00", "depart": "11:00"}]}],
    },
    "network.driver_upserted": {"driver_id": "D-01", "name": "Wang Fang", "vehicle": "VAN-01"},
    "logistics.shipment_created": {"shipment_id": "S1", "transfer_id": "T1", "barcode": "B1",
                                   "from_site": "JX-HY-01", "to_site": "JX-HN-01"},
    "logistics.shipment_picked_up": {"shipment_id": "S1", "transfer_id": "T1", "barcode": "B1",
                                     "site": "JX-HY-01", "route_id": "R1"},
    "logistics.shipment_arrived": {"shipment_id": "S1", "transfer_id": "T1", "barcode": "B1",
                                   "site": "JX-HUB"},
    "logistics.shipment_delivered": {"shipment_id": "S1", "transfer_id": "T1", "barcode": "B1",
                                     "site": "JX-HN-01"},
    "logistics.shipment_exception": {"shipment_id": "S1", "transfer_id": "T1", "barcode": "B1",
                                     "kind": "damaged", "site": "JX-HUB"},
    "logistics.shipment_cancelled": {"shipment_id": "S1", "transfer_id": "T1", "barcode": "B1"},
    "logistics.route_planned": {
        "route_id": "R1", "date": "2026-11-23", "vehicle": "V1", "depot": "JX-HUB",
        "stops": [{"seq": 1, "site": "JX-HN-01", "eta": "09:30", "deliveries": 4,
                   "pickups": 2}],
        "distance_km": 41.5, "duration_min": 95,
    },
    "logistics.route_completed": {"route_id": "R1", "date": "2026-11-23", "completed_stops": 5,
                                  "exceptions": 0},
}


def source_for(event_type: str, data: dict) -> str:
    return f"branch/{data['branch']}" if event_type.startswith("branch.") else "branchline/test"


def test_every_contract_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(EVENTS)


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_round_trip(event_type: str) -> None:
    model = EVENTS[event_type]
    payload = model.model_validate(SAMPLES[event_type])
    source = source_for(event_type, SAMPLES[event_type])
    event = make_event(payload, subject="subj", source=source)
    envelope, parsed = parse_bytes(event.to_bytes())
    assert envelope.type == event_type and envelope.id == event.id
    assert parsed == payload
    assert json.loads(event.to_bytes())["specversion"] == "1.0"


def _required_fields(event_type: str) -> list[str]:
    model = EVENTS[event_type]
    return [n for n, f in model.model_fields.items() if f.is_required()]


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_missing_field_is_named(event_type: str) -> None:
    for field in _required_fields(event_type):
        data = {k: v for k, v in SAMPLES[event_type].items() if k != field}
        source = source_for(event_type, SAMPLES[event_type])
        raw = {"specversion": "1.0", "id": "e1", "source": source, "type": event_type,
               "time": T, "subject": "s", "data": data}
        with pytest.raises(InvalidEvent) as info:
            parse_bytes(json.dumps(raw).encode())
        assert f"data.{field}" in info.value.fields, info.value.reason
        assert info.value.error_type == "invalid_data"


def test_wrong_type_is_named() -> None:
    data = dict(SAMPLES["acquisition.order_opened"])
    data["lines"] = [dict(data["lines"][0], quantity="three")]
    raw = {"specversion": "1.0", "id": "e1", "source": "branchline/acquisition",
           "type": "acquisition.order_opened", "time": T, "subject": "O1", "data": data}
    with pytest.raises(InvalidEvent) as info:
        parse_bytes(json.dumps(raw).encode())
    assert "data.lines.0.quantity" in info.value.fields


@pytest.mark.parametrize(
    ("raw", "error_type", "field"),
    [
        (b"not json at all", "not_json", None),
        (b"[1, 2]", "not_json", None),
        (json.dumps({"specversion": "1.0", "id": "x", "source": "s", "type": "no.such",
                     "time": T, "subject": "s", "data": {}}).encode(), "unknown_type", "type"),
        (json.dumps({"specversion": "1.0", "id": "x", "source": "s", "type": "branch.checkin",
                     "subject": "s", "data": {}}).encode(), "invalid_envelope", "time"),
        (json.dumps({"specversion": "1.0", "id": "x", "source": "s", "type": "branch.checkin",
                     "time": "2026-11-22T10:00:00", "subject": "s", "data": {}}).encode(),
         "invalid_envelope", "time"),
    ],
)
def test_unusable_records_say_why(raw: bytes, error_type: str, field: str | None) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_bytes(raw)
    assert info.value.error_type == error_type
    if field:
        assert field in info.value.fields


def test_branch_event_source_must_match_branch() -> None:
    raw = {"specversion": "1.0", "id": "x", "source": "branch/JX-OTHER", "type": "branch.checkin",
           "time": T, "subject": "B1", "data": {"branch": "JX-HN-01", "barcode": "B1"}}
    with pytest.raises(InvalidEvent) as info:
        parse_bytes(json.dumps(raw).encode())
    assert info.value.fields == ["source"]


def test_hold_request_needs_a_title() -> None:
    raw = {"specversion": "1.0", "id": "x", "source": "branch/JX-HN-01",
           "type": "branch.hold_requested", "time": T, "subject": "P1",
           "data": {"branch": "JX-HN-01", "patron": "P1"}}
    with pytest.raises(InvalidEvent):
        parse_bytes(json.dumps(raw).encode())


def test_unknown_fields_are_tolerated() -> None:
    raw = {"specversion": "1.0", "id": "x", "source": "branch/JX-HN-01", "type": "branch.checkin",
           "time": T, "subject": "B1", "future_attr": 1,
           "data": {"branch": "JX-HN-01", "barcode": "B1", "shelf": "A3"}}
    payload = payload_of(parse_bytes(json.dumps(raw).encode())[0])
    assert isinstance(payload, BranchCheckin) and payload.barcode == "B1"


def test_type_and_topic_are_properties_of_the_payload_class() -> None:
    payload = BranchCheckin(branch="JX-HN-01", barcode="B1")
    envelope = make_event(payload, subject="B1", source="branch/JX-HN-01")
    assert envelope.type == "branch.checkin" == BranchCheckin.event_type
    assert BranchCheckin.topic == "branch.events" and BranchCheckin.producer == "branch"
    assert TransferRequested.topic == "circulation.transfers"
    assert TransferRequested.producer == "circulation"


def test_a_type_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        @event("branch.checkin", topic="branch.events")
        class Again(Event):
            barcode: str


def test_a_handler_must_take_the_class_it_is_registered_for() -> None:
    handlers = Handlers()

    async def on_checkin(uow: UnitOfWork, env: Envelope, data: TransferRequested) -> None:
        return None

    with pytest.raises(TypeError, match="BranchCheckin"):
        handlers.on(BranchCheckin)(on_checkin)
    assert "branch.checkin" not in handlers


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_the_outbox_writes_what_the_envelope_model_would(event_type: str) -> None:
    """`SqlUnitOfWork.emit` writes the record's JSON itself: the same fields, in the same
    order, with the same values as `make_event(...).to_bytes()` (bar its own id and time),
    and it parses back to the payload."""
    payload = EVENTS[event_type].model_validate(SAMPLES[event_type])
    source = source_for(event_type, SAMPLES[event_type])
    engine = make_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")  # never connects
    ctx = ServiceContext("test", outbox_tables("test"), make_sessionmaker(engine))
    uow = SqlUnitOfWork(ctx)
    uow.source = source
    cause = make_event(BranchCheckin(branch="JX-A", barcode='B"1'), subject='B"1',
                       source="branch/JX-A")
    subject = 'S "中" \\ 1'
    uow.emit(payload, subject=subject, cause=cause)
    [row] = uow.queued_rows()
    expected = json.loads(make_event(payload, subject=subject, source=uow.source,
                                     cause=cause).to_bytes())
    written = json.loads(row["value"])
    assert list(written) == list(expected)
    for varying in ("id", "time"):
        expected.pop(varying), written.pop(varying)
    assert written == expected
    assert row["topic"] == EVENTS[event_type].topic and row["key"] == subject.encode()
    envelope, parsed = parse_bytes(row["value"])
    assert parsed == payload and envelope.causationid == cause.id
