"""Circulation's handlers against the in-memory unit of work: no Postgres, no Kafka."""

from __future__ import annotations

from datetime import UTC, datetime

from services.circulation import handlers
from services.circulation.models import Anomaly, Item, Loan, Site, Transfer
from shared.contracts import Envelope, Event, make_event
from shared.contracts.branch import BranchCheckin, BranchCheckout
from shared.contracts.cataloging import ItemCataloged, ItemWithdrawn
from shared.contracts.circulation import ItemCheckedIn, TransferRequested
from shared.contracts.logistics import ShipmentDelivered
from tests.fakes import FakeUnitOfWork


def fact(data: Event, subject: str) -> Envelope:
    source = f"branch/{data.branch}" if hasattr(data, "branch") else "branchline/test"
    return make_event(data, subject=subject, source=source,
                      time=datetime(2026, 11, 22, 10, tzinfo=UTC))


async def catalogued(uow: FakeUnitOfWork, barcode: str, owner: str, site: str) -> Item:
    data = ItemCataloged(barcode=barcode, bib_id="b1", title="Wei Cheng", call_number="I247",
                         owning_branch=owner, site=site)
    await handlers.on_item_cataloged(uow, fact(data, barcode), data)
    item = await uow.repo(Item).get(barcode)
    assert item is not None
    return item


async def test_new_item_goes_from_processing_to_its_owner() -> None:
    uow = FakeUnitOfWork("circulation")
    item = await catalogued(uow, "B1", owner="JX-HN-01", site="JX-CENTRAL")
    assert (item.status, item.site) == ("in_transit", "JX-CENTRAL")
    [transfer] = uow.repo(Transfer).rows.values()
    assert (transfer.to_site, transfer.reason, transfer.status) == ("JX-HN-01", "new_item", "open")
    assert uow.types() == ["circulation.transfer_requested", "circulation.item_status_changed"]


async def test_return_elsewhere_sends_the_item_home_and_says_so() -> None:
    uow = FakeUnitOfWork("circulation")
    await catalogued(uow, "B2", owner="JX-HN-01", site="JX-HN-01")
    checkin = BranchCheckin(branch="JX-PH-01", barcode="B2")
    await handlers.on_checkin(uow, fact(checkin, "B2"), checkin)
    item = await uow.repo(Item).get("B2")
    assert item is not None and item.status == "in_transit"
    requested = [e for e in uow.emitted if e.type == TransferRequested.event_type]
    assert [(e.data["from_site"], e.data["to_site"]) for e in requested] == [
        ("JX-PH-01", "JX-HN-01")]
    [checked_in] = [e for e in uow.emitted if e.type == ItemCheckedIn.event_type]
    assert checked_in.data["disposition"] == "transfer" and checked_in.subject == "B2"


async def test_floating_group_keeps_the_item_where_it_was_returned() -> None:
    uow = FakeUnitOfWork("circulation")
    for code in ("JX-HN-01", "JX-HN-02"):
        await uow.repo(Site).put(Site(code=code, name=code, kind="town", floating_group="HN"))
    await catalogued(uow, "B3", owner="JX-HN-01", site="JX-HN-01")
    checkin = BranchCheckin(branch="JX-HN-02", barcode="B3")
    await handlers.on_checkin(uow, fact(checkin, "B3"), checkin)
    item = await uow.repo(Item).get("B3")
    assert item is not None and (item.status, item.site) == ("available", "JX-HN-02")
    assert not [e for e in uow.emitted if e.type == TransferRequested.event_type]


async def test_checkout_of_an_item_on_loan_closes_the_old_loan_with_an_anomaly() -> None:
    uow = FakeUnitOfWork("circulation")
    await catalogued(uow, "B4", owner="JX-HN-01", site="JX-HN-01")
    for patron in ("P1", "P2"):
        out = BranchCheckout(branch="JX-HN-01", barcode="B4", patron=patron)
        await handlers.on_checkout(uow, fact(out, "B4"), out)
    loans = sorted(uow.repo(Loan).rows.values(), key=lambda loan: loan.patron)
    assert [(loan.patron, loan.returned_at is not None) for loan in loans] == [
        ("P1", True), ("P2", False)]
    assert [a.kind for a in uow.repo(Anomaly).rows.values()] == ["checkout_while_on_loan"]


async def test_delivery_without_an_open_transfer_is_an_anomaly_not_a_move() -> None:
    uow = FakeUnitOfWork("circulation")
    await catalogued(uow, "B5", owner="JX-HN-01", site="JX-HN-01")
    delivered = ShipmentDelivered(shipment_id="S1", transfer_id="T-unknown", barcode="B5",
                                  site="JX-PH-01")
    await handlers.on_shipment_delivered(uow, fact(delivered, "B5"), delivered)
    item = await uow.repo(Item).get("B5")
    assert item is not None and item.site == "JX-HN-01"
    assert [a.kind for a in uow.repo(Anomaly).rows.values()] == [
        "delivery_without_open_transfer"]


async def test_a_withdrawn_item_drops_its_transfer_and_is_never_chosen_again() -> None:
    uow = FakeUnitOfWork("circulation")
    item = await catalogued(uow, "B9", owner="JX-HN-01", site="JX-CENTRAL")
    [transfer] = uow.repo(Transfer).rows.values()
    withdrawn = ItemWithdrawn(barcode="B9", reason="water damage", bib_id="b1",
                              owning_branch="JX-HN-01")
    for _ in range(2):  # the second is a no-op
        await handlers.on_item_withdrawn(uow, fact(withdrawn, "B9"), withdrawn)
    assert item.status == "withdrawn"
    assert transfer.status == "cancelled"
    assert uow.types().count("circulation.transfer_cancelled") == 1
    changed = [e for e in uow.emitted if e.type == "circulation.item_status_changed"]
    assert changed[-1].data["status"] == "withdrawn"
    unknown = ItemWithdrawn(barcode="NOPE", reason="x")
    await handlers.on_item_withdrawn(uow, fact(unknown, "NOPE"), unknown)
    assert await uow.repo(Item).get("NOPE") is None
