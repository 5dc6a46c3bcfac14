"""The driver's route on a phone: stops in order, and scans that wait out a dead spot.

A returned book at Pinghu owned by Haining makes a shipment; the dispatcher plans today;
the driver whose route calls at Pinghu loads it offline, and the scan is sent when the
phone is back online, once (sent again, logistics answers `duplicate`)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from playwright.async_api import expect
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.service.db import make_engine
from tests.browser.conftest import DESK_SITE, PASSWORD, Web, new_page, shot, sign_in
from tests.browser.test_desk import shelved_item
from tests.support import branch_event, eventually
from web.users import save_user

PINGHU = "JX-PH-01"


async def driver_user(web: Web, driver: str) -> str:
    """The conftest's "drv" is D-01; the planner may give the route to another driver."""
    if driver == "D-01":
        return "drv"
    name = f"drv-{driver.lower()}"
    engine = make_engine(web.stack.database_url, pool_size=1)
    async with AsyncSession(engine, expire_on_commit=False) as session:
        await save_user(session, username=name, role="driver", password=PASSWORD,
                        driver=driver, display_name=name)
    await engine.dispose()
    return name


def driving_day() -> date:
    """Today in Jiaxing if the vans call at Pinghu today (Tue-Sat), else the next day they
    do: the test runs any day of the week."""
    day = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    while day.isoweekday() not in (2, 3, 4, 5, 6):
        day += timedelta(days=1)
    return day


async def route_calling_at(web: Web, site: str) -> dict[str, Any]:
    today = driving_day()
    plans = await web.api("POST", "logistics", "/routes/plan", role="dispatcher",
                          body={"date": today.isoformat()})
    for plan in plans:
        for summary in plan["routes"]:
            route = await web.api("GET", "logistics", f"/routes/{summary['route_id']}",
                                  role="dispatcher")
            if any(stop["site"] == site for stop in route["stops"]):
                return dict(route)
    raise AssertionError(f"no route of {today} calls at {site}: {plans}")


async def test_driver_scans_offline_and_sends_them_once(browser: Any, web: Web) -> None:
    barcode = await shelved_item(web, DESK_SITE)
    await web.api("POST", "circulation", "/branch-events",
                  body=branch_event("branch.checkin", PINGHU, barcode))

    async def shipment() -> Any:
        found = await web.api("GET", "logistics", f"/shipments?barcode={barcode}")
        return next((s for s in found if s["status"] == "created"), None)

    await eventually(shipment, what=f"a shipment for {barcode}")
    route = await route_calling_at(web, PINGHU)
    driver = route["driver"]
    assert driver, route
    page = await new_page(browser, web, phone=True)
    await sign_in(page, await driver_user(web, driver))
    assert page.url.endswith("/driver")
    if route["date"] != datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat():
        await page.goto(f"/driver?date={route['date']}")  # a later day's route
    stops = page.locator("ol.stops > li")
    await expect(stops).to_have_count(len(route["stops"]))
    await expect(stops.first).to_contain_text("预计到达")
    await expect(page.locator("#queue-state")).to_have_text("全部已发送")

    await page.select_option("#scan-site", PINGHU)
    await page.select_option("#scan-kind", "load")
    await page.context.set_offline(True)
    await page.fill("#scan-code", barcode)
    await page.press("#scan-code", "Enter")
    await expect(page.locator("#queue-state")).to_contain_text("1 条扫描待发送")
    await expect(page.locator("#scan-log li").first).to_contain_text("待发送")
    stored = await page.evaluate(
        f"JSON.parse(localStorage.getItem('branchline.scans.{driver}'))")
    assert len(stored) == 1 and stored[0]["scan"]["barcodes"] == [barcode]
    await page.wait_for_timeout(1500)  # the retry timer finds no network: still waiting
    await expect(page.locator("#queue-state")).to_contain_text("1 条扫描待发送")
    await shot(page, "driver-offline-phone")

    await page.context.set_offline(False)
    await expect(page.locator("#queue-state")).to_have_text("全部已发送", timeout=15_000)
    await expect(page.locator("#scan-log li").first).to_contain_text("picked_up")
    moved = await web.api("GET", "logistics", f"/shipments?barcode={barcode}")
    assert [s["status"] for s in moved] == ["picked_up"]

    again = await web.api("POST", "logistics", "/scans/batch", role="driver", driver=driver,
                          body={"scans": [stored[0]["scan"]]})
    assert (again["applied"], again["duplicates"]) == (0, 1)
    await page.reload()
    await expect(page.locator("#scan-log li")).to_have_count(1)  # kept, answered, once
    await shot(page, "driver-route-phone")
    await page.context.close()


async def test_no_route_today_is_said_plainly(browser: Any, web: Web) -> None:
    page = await new_page(browser, web, phone=True)
    await sign_in(page, "disp")
    await page.goto(f"/driver?driver=D-{uuid.uuid4().hex[:4]}")
    await expect(page.locator("#no-route")).to_have_text("这位司机今天没有路线。")
    response = await page.goto("/driver?driver=D-01")
    assert response.status == 200
    await page.context.close()
