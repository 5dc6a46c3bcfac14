"""Logistics' handlers against the in-memory unit of work: no Postgres, no Kafka."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.logistics import domain, handlers
from services.logistics.models import Shipment
from shared.contracts import Envelope, Event, make_event
from shared.contracts.circulation import TransferCancelled, TransferCompleted, TransferRequested
from shared.contracts.logistics import (
    ShipmentCancelled,
    ShipmentCreated,
    ShipmentDelivered,
    ShipmentPickedUp,
    SiteUpserted,
)
from tests.fakes import FakeUnitOfWork

T0 = datetime(2026, 11, 22, 10, tzinfo=UTC)


def fact(data: Event, subject: str) -> Envelope:
    return make_event(data, subject=subject, source="branchline/circulation", time=T0)


def requested(transfer_id: str, barcode: str = "B1", from_site: str = "JX-HN-01",
              to_site: str = "JX-PH-01") -> TransferRequested:
    return TransferRequested(transfer_id=transfer_id, barcode=barcode, from_site=from_site,
                             to_site=to_site, reason="return_home", requested_at=T0)


async def shipped(uow: FakeUnitOfWork, transfer_id: str, barcode: str = "B1") -> Shipment:
    data = requested(transfer_id, barcode)
    await handlers.on_transfer_requested(uow, fact(data, barcode), data)
    found = await uow.repo(Shipment).find("transfer_id", [transfer_id])
    return found[transfer_id]


# --- transfers ----------------------------------------------------------------------------


async def test_a_transfer_request_creates_one_shipment_and_announces_it() -> None:
    uow = FakeUnitOfWork("logistics")
    data = requested("T-1")
    env = fact(data, "B1")
    await handlers.on_transfer_requested(uow, env, data)
    [shipment] = uow.repo(Shipment).rows.values()
    assert (shipment.transfer_id, shipment.status, shipment.last_site) == (
        "T-1", "created", "JX-HN-01")
    [created] = uow.emitted
    assert created.type == ShipmentCreated.event_type
    assert created.subject == "B1" and created.causationid == env.id
    assert created.data == {"shipment_id": shipment.shipment_id, "transfer_id": "T-1",
                            "barcode": "B1", "from_site": "JX-HN-01", "to_site": "JX-PH-01"}


async def test_a_repeated_request_ships_nothing_twice() -> None:
    uow = FakeUnitOfWork("logistics")
    await shipped(uow, "T-1")
    again = requested("T-1")
    await handlers.on_transfer_requested(uow, fact(again, "B1"), again)
    # a later unit of work (the next batch) finds the shipment through the repository
    later = FakeUnitOfWork("logistics")
    later.repos = uow.repos
    await handlers.on_transfer_requested(later, fact(again, "B1"), again)
    assert len(uow.repo(Shipment).rows) == 1
    assert uow.types() == [ShipmentCreated.event_type]
    assert later.emitted == []


async def test_cancelling_the_transfer_cancels_its_open_shipment_once() -> None:
    uow = FakeUnitOfWork("logistics")
    shipment = await shipped(uow, "T-2", "B2")
    cancel = TransferCancelled(transfer_id="T-2", barcode="B2", reason="checked out")
    await handlers.on_transfer_cancelled(uow, fact(cancel, "B2"), cancel)
    await handlers.on_transfer_cancelled(uow, fact(cancel, "B2"), cancel)
    assert shipment.status == "cancelled" and shipment.cancelled_at == T0
    assert uow.types() == [ShipmentCreated.event_type, ShipmentCancelled.event_type]
    assert uow.emitted[-1].data == {"shipment_id": shipment.shipment_id,
                                    "transfer_id": "T-2", "barcode": "B2"}


async def test_cancelling_a_transfer_without_a_shipment_or_already_delivered_does_nothing(
) -> None:
    uow = FakeUnitOfWork("logistics")
    unknown = TransferCancelled(transfer_id="T-none", barcode="B9", reason="x")
    await handlers.on_transfer_cancelled(uow, fact(unknown, "B9"), unknown)
    shipment = await shipped(uow, "T-3", "B3")
    shipment.status = "delivered"
    cancel = TransferCancelled(transfer_id="T-3", barcode="B3", reason="too late")
    await handlers.on_transfer_cancelled(uow, fact(cancel, "B3"), cancel)
    assert shipment.status == "delivered" and shipment.cancelled_at is None
    assert uow.types() == [ShipmentCreated.event_type]


async def test_completed_transfer_delivers_the_shipment_where_it_was_checked_in() -> None:
    uow = FakeUnitOfWork("logistics")
    shipment = await shipped(uow, "T-4", "B4")
    shipment.status = "picked_up"
    done = TransferCompleted(transfer_id="T-4", barcode="B4", site="JX-PH-01")
    await handlers.on_transfer_completed(uow, fact(done, "B4"), done)
    await handlers.on_transfer_completed(uow, fact(done, "B4"), done)  # redelivered
    assert (shipment.status, shipment.last_site, shipment.delivered_at) == (
        "delivered", "JX-PH-01", T0)
    delivered = [e for e in uow.emitted if e.type == ShipmentDelivered.event_type]
    assert [e.data["site"] for e in delivered] == ["JX-PH-01"]


async def test_a_completed_transfer_does_not_revive_a_cancelled_shipment() -> None:
    uow = FakeUnitOfWork("logistics")
    shipment = await shipped(uow, "T-5", "B5")
    shipment.status = "cancelled"
    done = TransferCompleted(transfer_id="T-5", barcode="B5", site="JX-PH-01")
    await handlers.on_transfer_completed(uow, fact(done, "B5"), done)
    assert shipment.status == "cancelled"
    assert uow.types() == [ShipmentCreated.event_type]


async def test_handlers_are_registered_for_the_transfers_topic() -> None:
    assert set(handlers.handlers.by_type) == {
        TransferRequested.event_type, TransferCancelled.event_type,
        TransferCompleted.event_type}
    assert handlers.handlers.topics == ("circulation.transfers",)
    assert handlers.handlers.prefetch is handlers.prefetch


# --- scans moving shipments -------------------------------------------------------------


def shipment_at(status: str, last_site: str, created: datetime, sid: str) -> Shipment:
    return Shipment(shipment_id=sid, transfer_id=f"T-{sid}", barcode="B7",
                    from_site="JX-HN-01", to_site="JX-PH-01", status=status,
                    last_site=last_site, created_at=created)


def test_a_scan_moves_the_newest_shipment_it_can_move() -> None:
    older = shipment_at("created", "JX-HN-01", T0, "S-old")
    newer = shipment_at("picked_up", "JX-HN-01", T0 + timedelta(hours=1), "S-new")
    shipment, effect = handlers.first_that_moves([newer, older], "load", "JX-HN-01")
    assert shipment is older and effect.outcome == "picked_up"
    shipment, effect = handlers.first_that_moves([newer, older], "load", "JX-TX-01")
    assert shipment is newer and effect.describe().startswith("ignored: ")


def test_moves_update_the_shipment_and_emit_the_matching_event() -> None:
    uow = FakeUnitOfWork("logistics")
    shipment = shipment_at("created", "JX-HN-01", T0, "S-1")
    later = T0 + timedelta(hours=2)
    handlers.move(uow, shipment, domain.ScanEffect("picked_up"), site="JX-HN-01",
                  route_id="R-1", crate_id=None, time=T0)
    handlers.move(uow, shipment, domain.ScanEffect("arrived"), site="JX-HUB",
                  route_id="R-1", crate_id=None, time=later)
    handlers.move(uow, shipment, domain.ScanEffect("delivered"), site="JX-PH-01",
                  route_id="R-2", crate_id="C-1", time=later)
    assert (shipment.status, shipment.last_site, shipment.route_id) == (
        "delivered", "JX-PH-01", "R-1")
    assert (shipment.picked_up_at, shipment.delivered_at) == (T0, later)
    assert uow.types() == ["logistics.shipment_picked_up", "logistics.shipment_arrived",
                           "logistics.shipment_delivered"]
    picked = uow.emitted[0]
    assert picked.type == ShipmentPickedUp.event_type and picked.subject == "B7"
    assert picked.data == {"shipment_id": "S-1", "transfer_id": "T-S-1", "barcode": "B7",
                           "site": "JX-HN-01", "route_id": "R-1"}
    assert [e.data["site"] for e in uow.emitted] == ["JX-HN-01", "JX-HUB", "JX-PH-01"]


# --- the network --------------------------------------------------------------------------


def test_a_validated_site_is_announced_in_the_contract_shape() -> None:
    [hub, town] = domain.validate_network({"sites": [
        {"code": "JX-HUB", "name": "Hub", "kind": "hub", "lat": 30.7, "lon": 120.7,
         "hub": "JX-HUB", "opening_hours": {}, "courier_days": []},
        {"code": "JX-A", "name": "A", "kind": "town", "lat": 30.75, "lon": 120.75,
         "hub": "JX-HUB", "opening_hours": {"tue": [["13:00", "17:00"], ["09:00", "12:00"]]},
         "courier_days": ["fri", "mon"], "floating_group": "G1"},
    ]})
    event = handlers.site_upserted(town)
    assert isinstance(event, SiteUpserted)
    assert event.kind == "town" and event.floating_group == "G1" and event.active
    assert event.opening_hours["tue"] == [("09:00", "12:00"), ("13:00", "17:00")]
    assert event.opening_hours["sun"] == []
    assert event.courier_days == ["mon", "fri"]
    assert handlers.site_upserted(hub).hub == "JX-HUB"


def test_literal_helpers_refuse_what_validation_would_have_refused() -> None:
    assert domain.site_kind("smart_room") == "smart_room"
    assert domain.weekday("sun") == "sun"
    with pytest.raises(ValueError, match="castle"):
        domain.site_kind("castle")
    with pytest.raises(ValueError, match="funday"):
        domain.weekday("funday")


def test_an_invalid_network_is_a_domain_invalid_naming_each_path() -> None:
    from shared.errors import Invalid

    with pytest.raises(Invalid) as caught:
        domain.validate_network({"sites": [
            {"code": "JX-HUB", "name": "Hub", "kind": "hub", "lat": 30.7, "lon": 120.7,
             "hub": "JX-HUB", "opening_hours": {"tue": [["17:00", "09:00"]]},
             "courier_days": []},
            "not a site",
        ]})
    assert isinstance(caught.value, domain.InvalidNetwork)
    assert [field for field, _ in caught.value.errors] == [
        "sites.0.opening_hours.tue.0", "sites.1"]
    with pytest.raises(domain.InvalidNetwork) as empty:
        domain.validate_network({"sites": []})
    assert empty.value.errors == [("sites", "must be a non-empty list of sites")]


async def test_a_cancellation_before_its_request_ships_nothing() -> None:
    """Replayed after a broker loss, a request can arrive after its own cancellation."""
    uow = FakeUnitOfWork("logistics")
    cancelled = TransferCancelled(transfer_id="T-late", barcode="B-late", reason="checked out")
    await handlers.on_transfer_cancelled(
        uow, make_event(cancelled, subject="B-late", source="branchline/circulation"), cancelled)
    requested = TransferRequested(transfer_id="T-late", barcode="B-late", from_site="JX-PH-01",
                                  to_site="JX-HN-01", reason="return_home",
                                  requested_at=datetime(2026, 11, 22, tzinfo=UTC))
    await handlers.on_transfer_requested(
        uow, make_event(requested, subject="B-late", source="branchline/circulation"), requested)
    [shipment] = uow.repo(Shipment).rows.values()
    assert shipment.status == "cancelled"
    assert uow.emitted == []  # nothing to drive, nothing announced
