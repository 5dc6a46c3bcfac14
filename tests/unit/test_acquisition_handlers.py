"""Acquisition's handlers that need no SQL, against the in-memory unit of work."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.acquisition import handlers
from services.acquisition.models import Fund, Site, Vendor
from shared.contracts import make_event
from shared.contracts.logistics import SiteUpserted
from shared.errors import Conflict
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
    assert handlers.handlers.topics == ("network.sites",)
