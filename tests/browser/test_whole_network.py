"""The whole network in a browser, person by person, each in their own browser context:
acquisitions orders and receives three copies of a new title (Haining 2, Tongxiang 1),
the cataloger completes them out of the queue, circulation and logistics send them from
the central library to their branches, the dispatcher re-plans the day, the driver loads
them at the central library and unloads Haining's at Haining, and Haining's desk checks
them in and is told to reshelve them: available at Haining."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from playwright.async_api import expect

from tests.browser.conftest import DESK_SITE, Web, new_page, shot, sign_in
from tests.browser.test_acquisitions import random_isbn
from tests.browser.test_cataloging import reload_until
from tests.browser.test_desk import shelved_item
from tests.browser.test_driver import driver_user
from tests.integration.test_cataloging import cnmarc_record, marc_file

CENTRAL, HAINING, TONGXIANG = "JX-CENTRAL", DESK_SITE, "JX-TX-01"


def courier_day() -> date:
    """Today in Jiaxing if the van calls at both the central library (Mon-Fri) and Haining
    (Tue-Sat) today, else the next day it does: the test runs any day of the week."""
    day = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    while day.isoweekday() not in (2, 3, 4, 5):
        day += timedelta(days=1)
    return day


async def poll(check: Callable[[], Awaitable[Any]], what: str, seconds: float = 30) -> Any:
    """Kafka is asynchronous: ask again until `check` answers something true."""
    deadline = time.monotonic() + seconds
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not after {seconds} s"
        await asyncio.sleep(0.5)


async def test_a_title_goes_from_order_to_the_shelf_of_its_branch(browser: Any,
                                                                 web: Web) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    vendor, fund, isbn = f"V-{tag}", f"F-{tag}", random_isbn()
    title = f"全网流程测试 {tag}"

    # 1. acquisitions: a vendor and a fund, the order built, opened and received
    acq = await new_page(browser, web)
    await sign_in(acq, "acq")
    await acq.click("summary:has-text('新增供应商')")
    await acq.fill("#v-id", vendor)
    await acq.fill("#v-name", "浙江新华书店")
    await acq.click("form[action='/acquisitions/vendors'] button[type=submit]")
    assert "供应商已保存" in await acq.locator("#flash").inner_text()
    await acq.click("summary:has-text('新增经费')")
    await acq.fill("#f-code", fund)
    await acq.fill("#f-name", "2026 中文图书")
    await acq.fill("#f-budget", "1000.00")
    await acq.click("form[action='/acquisitions/funds'] button[type=submit]")
    assert "经费已保存" in await acq.locator("#flash").inner_text()

    await acq.goto("/acquisitions/orders/new")
    await acq.select_option("#o-vendor", vendor)
    await acq.select_option("#o-fund", fund)
    await acq.fill("#l0-isbn", isbn)
    await acq.fill("#l0-title", title)
    await acq.fill("#l0-author", "钱锺书")
    await acq.fill("#l0-price", "39.00")
    await acq.fill("#l0-copies", "3")
    await acq.fill("#l0-dist", f"{HAINING}:2, {TONGXIANG}:1")
    await acq.click("button[value=create]")
    await acq.wait_for_url("**/acquisitions/orders/*")
    await acq.click("text=下单（预留经费）")
    assert "订单已下达" in await acq.locator("#flash").inner_text()
    assert await acq.locator("#order-status").inner_text() == "open"

    await acq.goto("/acquisitions/receiving")
    await acq.fill("#scan", isbn)
    await acq.press("#scan", "Enter")
    await acq.wait_for_url(f"**/acquisitions/receiving?isbn={isbn}")
    rows = acq.locator("#worklist tbody tr")
    assert await rows.count() == 1
    await rows.locator("input[name=quantity]").fill("3")
    await rows.locator("button[type=submit]").click()
    flash = await acq.locator("#flash").inner_text()
    assert "已验收 3 册" in flash and f"{HAINING} × 2" in flash and f"{TONGXIANG} × 1" in flash
    await shot(acq, "flow-1-acquisitions")
    await acq.context.close()

    # 2. cataloging: the three copies wait in the queue; a CNMARC record imported on the
    # page classifies them, their labels are printed and they are completed
    cat = await new_page(browser, web)
    await sign_in(cat, "cat")
    mine = f"#queue tbody tr:has-text('{title}')"
    await reload_until(cat, "/cataloging", mine, 3, seconds=30)
    barcodes = [await box.get_attribute("value")
                for box in await cat.locator(f"{mine} input[name=barcode]").all()]
    assert len(set(barcodes)) == 3 and all(barcodes), barcodes

    await cat.goto("/cataloging/imports")
    await cat.set_input_files("#marc-file", files=[{
        "name": "cnmarc.mrc", "mimeType": "application/marc",
        "buffer": marc_file(cnmarc_record(isbn, title, "钱锺书", "人民文学出版社", "2026"))}])
    await cat.select_option("#marc-format", "unimarc")
    await cat.click("form[action='/cataloging/imports'] button[type=submit]")
    await cat.wait_for_url("**/cataloging/imports/*")
    await cat.wait_for_selector("#report", timeout=30_000)
    assert await cat.locator("#rejected tbody tr").count() == 0

    await reload_until(cat, "/cataloging?lacks=label", mine, 3, seconds=30)
    for box in await cat.locator(f"{mine} input[name=barcode]").all():
        await box.check()
    await cat.click("button[value=labels]")
    assert await cat.locator("#labels tbody tr").count() == 3
    await cat.goto("/cataloging")
    for box in await cat.locator(f"{mine} input[name=barcode]").all():
        await box.check()
    await cat.click("button[value=complete]")
    assert "已完成 3 册" in await cat.locator("#outcome").inner_text()
    await shot(cat, "flow-2-cataloging")
    await reload_until(cat, "/cataloging", mine, 0, seconds=30)
    await cat.context.close()

    # 3. circulation sends each copy from the central library to its branch and logistics
    # opens its shipment (no page shows this: read back through the services' APIs)
    owners: dict[str, str] = {}
    for barcode in barcodes:
        async def in_transit(barcode: str = barcode) -> Any:
            view = await web.api("GET", "circulation", f"/items/{barcode}")
            transfer = view.get("open_transfer") or {}
            return view if (view["status"] == "in_transit"
                            and transfer.get("from_site") == CENTRAL
                            and transfer.get("to_site") == view["owning_branch"]) else None

        async def shipped(barcode: str = barcode) -> Any:
            found = await web.api("GET", "logistics", f"/shipments?barcode={barcode}")
            return next((s for s in found if s["status"] == "created"
                         and s["from_site"] == CENTRAL), None)

        owners[barcode] = (await poll(in_transit, f"{barcode} in transit"))["owning_branch"]
        assert (await poll(shipped, f"a shipment for {barcode}"))["to_site"] == owners[barcode]
    ours = sorted(b for b, owner in owners.items() if owner == HAINING)
    assert len(ours) == 2 and sorted(owners.values()) == [HAINING, HAINING, TONGXIANG]

    # A van calls at Haining only when something waits to go there or to leave from there
    # (the central library's copies are collected there and taken to the hub unless the
    # same route calls at Haining). A reader returns a Tongxiang book at Haining's desk:
    # it is sent on, so Haining is a stop of the day. The book itself is made through
    # Kafka (no page creates a catalogued copy on a shelf), its check-in is on the page.
    returned = await shelved_item(web, TONGXIANG)
    desk = await new_page(browser, web)
    await sign_in(desk, "desk-hn")
    assert desk.url.endswith(f"/desk/{HAINING}")
    await desk.fill("#checkin-barcode", returned)
    await desk.press("#checkin-barcode", "Enter")
    await expect(desk.locator("#answer")).to_have_class("answer send")
    await expect(desk.locator("#answer")).to_contain_text("送往 Tongxiang")

    async def waits_at_haining() -> Any:
        found = await web.api("GET", "logistics", f"/shipments?barcode={returned}")
        return any(s["status"] == "created" and s["last_site"] == HAINING for s in found)

    await poll(waits_at_haining, f"a shipment for {returned} at {HAINING}")

    # the dispatcher re-plans the driving day on the board
    day = courier_day().isoformat()
    disp = await new_page(browser, web)
    await sign_in(disp, "disp")
    await disp.goto(f"/dispatch?date={day}")
    disp.set_default_timeout(120_000)  # the solver may take its whole limit
    async with disp.expect_navigation():
        await disp.click("#replan button")
    await disp.wait_for_load_state("networkidle")
    disp.set_default_timeout(20_000)
    assert "已重新规划" in await disp.locator("main").inner_text()
    card = disp.locator(".route-card").filter(has_text=CENTRAL).first
    await expect(card).to_contain_text(HAINING)
    await shot(disp, "flow-3-dispatch")
    await disp.context.close()

    route = None
    for summary in await web.api("GET", "logistics", f"/routes?date={day}", "dispatcher"):
        detail = await web.api("GET", "logistics", f"/routes/{summary['route_id']}",
                               "dispatcher")
        sites = {stop["site"] for stop in detail["stops"]}
        if {CENTRAL, HAINING} <= sites:
            route = detail
    assert route is not None and route["driver"], f"no route of {day} calls at both"

    # 4. the driver scans on a phone: loads Haining's two copies at the central library
    # (loose books: item scans, no crate needed), unloads them at Haining and loads the
    # returned Tongxiang book there. The planner orders the stops on its own and may well
    # call at Haining before the central library (it plans only collections there, to the
    # hub); logistics accepts the scans in this order all the same, and an unload at the
    # destination delivers whatever the route's order.
    drv = await new_page(browser, web, phone=True)
    await sign_in(drv, await driver_user(web, route["driver"]))
    assert drv.url.endswith("/driver")
    if route["date"] != datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat():
        await drv.goto(f"/driver?date={route['date']}")  # a later day's route
    await expect(drv.locator("ol.stops > li")).to_have_count(len(route["stops"]))

    async def scan(site: str, kind: str, codes: list[str], outcome: str) -> None:
        await drv.select_option("#scan-site", site)
        await drv.select_option("#scan-kind", kind)
        for code in codes:
            await drv.fill("#scan-code", code)
            await drv.press("#scan-code", "Enter")
            await expect(drv.locator("#queue-state")).to_have_text("全部已发送",
                                                                   timeout=15_000)
            await expect(drv.locator("#scan-log li").first).to_contain_text(
                f"{code}: {outcome}")

    await scan(CENTRAL, "load", ours, "picked_up")
    await scan(HAINING, "unload", ours, "delivered")
    await scan(HAINING, "load", [returned], "picked_up")
    await shot(drv, "flow-4-driver")
    await drv.context.close()
    for barcode in ours:
        found = await web.api("GET", "logistics", f"/shipments?barcode={barcode}")
        assert found[0]["status"] == "delivered" and found[0]["to_site"] == HAINING

    # 5. Haining's desk checks the arrived copies in: its own, so they are reshelved
    await desk.goto(f"/desk/{HAINING}")
    for barcode in ours:
        await desk.fill("#checkin-barcode", barcode)
        await desk.press("#checkin-barcode", "Enter")
        answer = desk.locator("#answer")
        await expect(answer).to_have_class("answer reshelve")
        await expect(answer).to_contain_text("上架")
    await shot(desk, "flow-5-desk")
    await desk.context.close()

    for barcode in ours:
        async def on_the_shelf(barcode: str = barcode) -> bool:
            view = await web.api("GET", "circulation", f"/items/{barcode}")
            return bool(view["status"] == "available" and view["site"] == HAINING
                        and view["open_transfer"] is None)

        await poll(on_the_shelf, f"{barcode} available at {HAINING}")
