"""Acquisition's handlers that need no SQL, against the in-memory unit of work."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.acquisition import domain, handlers
from services.acquisition.models import Fund, HeldCopy, Site, Vendor
from shared.contracts import make_event
from shared.contracts.cataloging import ItemCataloged, ItemWithdrawn
from shared.contracts.logistics import SiteUpserted
from shared.errors import Conflict, Invalid
from tests.fakes import FakeUnitOfWork


async def test_a_vendor_is_added_once() -> None:
    uow = FakeUnitOfWork("acquisition")
    await handlers.add_vendor(uow, "XINHUA", "Xinhua Bookstore")
    with pytest.raises(Conflict, match="'XINHUA' already exists"):
        await handlers.add_vendor(uow, "XINHUA", "Another name")
    assert [v.name for v in uow.repo(Vendor).rows.values()] == ["Xinhua Bookstore"]


async def test_a_new_fund_starts_with_nothing_committed() -> None:
    uow = FakeUnitOfWork("acquisition")
    fund = await handlers.add_fund(uow, "ADULT-2026", "Adult fiction", Decimal("500.00"), "CNY")
    assert (fund.encumbered, fund.spent) == (Decimal("0"), Decimal("0"))
    assert handlers.balance_of(fund).available == Decimal("500.00")
    assert await uow.repo(Fund).get("ADULT-2026") is fund
    with pytest.raises(Conflict, match="'ADULT-2026' already exists"):
        await handlers.add_fund(uow, "ADULT-2026", "Again", Decimal("1"), "CNY")
    assert uow.emitted == []  # funds are internal to the acquisition center


async def test_the_network_read_model_follows_site_events() -> None:
    uow = FakeUnitOfWork("acquisition")
    for active in (True, False):
        data = SiteUpserted(code="JX-HN-01", name="Haining", kind="county", lat=30.5,
                            lon=120.7, hub="JX-HUB", opening_hours={}, courier_days=["mon"],
                            active=active)
        env = make_event(data, subject=data.code, source="branchline/logistics")
        await handlers.on_site_upserted(uow, env, data)
    site = await uow.repo(Site).get("JX-HN-01")
    assert site is not None and (site.kind, site.active) == ("county", False)
    assert "network.site_upserted" in handlers.handlers
    assert handlers.handlers.topics == ("cataloging.items", "network.sites")


def order(vendor: str = "XINHUA", fund: str = "ADULT-2026", currency: str = "CNY",
          *copies: int) -> handlers.NewOrder:
    """An order of one line of 3 copies, split over branches as `copies` says (2 + 1)."""
    shares = [domain.Share(f"JX-HN-0{i + 1}", n) for i, n in enumerate(copies or (2, 1))]
    line = handlers.NewLine(isbn="9787020002207", title="Hongloumeng",
                            unit_price=Decimal("38.50"), quantity=3, distribution=shares)
    return handlers.NewOrder(vendor_id=vendor, fund_code=fund, currency=currency,
                             lines=[line])


async def test_an_order_is_refused_naming_the_field_that_does_not_fit() -> None:
    uow = FakeUnitOfWork("acquisition")
    await handlers.add_vendor(uow, "XINHUA", "Xinhua Bookstore")
    await handlers.add_fund(uow, "ADULT-2026", "Adult fiction", Decimal("500.00"), "CNY")
    await handlers.check_order(uow, order())  # all fits

    cases = [
        (order(vendor="NOBODY"), "vendor_id", "unknown vendor 'NOBODY'"),
        (order(fund="KIDS-2026"), "fund_code", "unknown fund 'KIDS-2026'"),
        (order(currency="EUR"), "currency", "fund 'ADULT-2026' is kept in CNY, not EUR"),
        (order("XINHUA", "ADULT-2026", "CNY", 2, 2), "lines.0.distribution",
         "copies add up to 4, but the line orders 3"),
    ]
    for bad, field, message in cases:
        with pytest.raises(Invalid) as refused:
            await handlers.check_order(uow, bad)
        assert (refused.value.field, refused.value.message) == (field, message)
        assert refused.value.errors == [(field, message)]
    assert uow.emitted == []


async def test_a_withdrawn_copy_stops_counting_as_held() -> None:
    uow = FakeUnitOfWork("acquisition")
    for barcode in ("JX1", "JX2"):
        data = ItemCataloged(barcode=barcode, bib_id="b1", isbn="9787020024759", title="围城",
                             call_number="I247.5/1", owning_branch="JX-HN-01", site="JX-HN-01")
        await handlers.on_item_cataloged(uow, make_event(data, subject=barcode,
                                                         source="branchline/cataloging"), data)
    gone = ItemWithdrawn(barcode="JX1", reason="damaged")
    await handlers.on_item_withdrawn(uow, make_event(gone, subject="JX1",
                                                     source="branchline/cataloging"), gone)
    assert list(uow.repo(HeldCopy).rows) == ["JX2"]
