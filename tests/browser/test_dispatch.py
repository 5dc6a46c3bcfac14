"""The dispatch board: items waiting at a branch become shipments, the dispatcher re-plans
the day and sees each van's route on the map and in the table, and resolves an exception."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tests.browser.conftest import Web, new_page, shot, sign_in
from tests.support import branch_event, eventually, item_cataloged, produce, token

HAINING, PINGHU = "JX-HN-01", "JX-PH-01"


def next_courier_day() -> date:
    """A coming day the vans run and the branches take deliveries (tue to fri in the demo)."""
    day = datetime.now(ZoneInfo("Asia/Shanghai")).date() + timedelta(days=1)
    while day.weekday() not in (1, 2, 3, 4):
        day += timedelta(days=1)
    return day


async def returned_away_from_home(web: Web, count: int) -> list[str]:
    """Items of Haining checked in at Pinghu: each is a shipment waiting at Pinghu."""
    barcodes = [f"WEB-D-{uuid.uuid4().hex[:6]}" for _ in range(count)]
    await produce(web.stack.settings, "cataloging.items",
                  [item_cataloged(b, HAINING) for b in barcodes])
    for b in barcodes:
        async def registered(b: str = b) -> bool:
            r = await web.http.get(f"{web.service('circulation')}/items/{b}",
                                   headers=token("admin"))
            return r.status_code == 200 and r.json()["status"] == "available"

        await eventually(registered, timeout=60, what=f"{b} registered")
        await web.api("POST", "circulation", "/branch-events",
                      "branch_system", branch_event("branch.checkin", PINGHU, b), site=PINGHU)
    for b in barcodes:
        async def shipped(b: str = b) -> bool:
            rows = await web.api("GET", "logistics", f"/shipments?barcode={b}")
            return any(s["status"] == "created" for s in rows)

        await eventually(shipped, timeout=60, what=f"a shipment for {b}")
    return barcodes


async def test_dispatcher_replans_and_sees_the_routes_on_the_map(browser: Any,
                                                                 web: Web) -> None:
    barcodes = await returned_away_from_home(web, 3)
    missing = barcodes[-1]
    await web.api("POST", "logistics", "/exceptions", "dispatcher",
                  {"barcode": missing, "kind": "missing", "site": PINGHU, "note": "not in crate"})
    day = next_courier_day().isoformat()

    page = await new_page(browser, web)
    await sign_in(page, "disp")
    assert page.url.endswith("/dispatch")
    await page.goto(f"/dispatch?date={day}")
    assert await page.locator("h1").inner_text() == f"调度台 · {day}"
    page.set_default_timeout(120_000)  # the solver may take its whole limit (20 s)
    async with page.expect_navigation():
        await page.click("#replan button")
    await page.wait_for_load_state("networkidle")
    page.set_default_timeout(20_000)
    body = await page.locator("main").inner_text()
    assert "已重新规划" in body, body[:2000]

    svg = page.locator("svg#route-map")
    assert await svg.locator("title").first.text_content() == f"路线图 {day}"
    assert await svg.locator("polyline.route").count() >= 1
    assert await svg.locator("circle.stop").count() >= 1
    assert await svg.locator("g.site").count() == 21  # every site of the demo network
    pinghu_stop = svg.locator("circle.stop title", has_text=PINGHU)
    assert await pinghu_stop.count() >= 1
    card = page.locator(".route-card").filter(has_text=PINGHU).first
    assert await card.locator(".total").inner_text() != "0"
    assert "/" in await card.locator("strong.num").inner_text()

    progress = await page.evaluate(
        f"fetch('/dispatch/progress?date={day}').then(r => r.json())")
    assert progress["routes"] and all(r["total"] >= 0 for r in progress["routes"])

    exceptions = page.locator("section", has=page.locator("#exc-h"))
    assert missing in await exceptions.inner_text()
    await shot(page, "dispatch-desktop")

    form = exceptions.locator("form.resolve").filter(
        has=page.locator(f"input[value='{PINGHU}']")).first
    await form.locator("select").select_option("found")
    async with page.expect_navigation():
        await form.locator("button").click()
    assert "异常已处理" in await page.locator("main").inner_text()
    assert missing not in await page.locator(
        "section", has=page.locator("#exc-h")).inner_text()
    await page.context.close()

    phone = await new_page(browser, web, phone=True)
    await sign_in(phone, "disp")
    await phone.goto(f"/dispatch?date={day}")
    assert await phone.locator("svg#route-map polyline.route").count() >= 1
    await shot(phone, "dispatch-phone")
    await phone.context.close()


async def test_a_plan_for_a_day_without_vans_shows_no_routes(browser: Any, web: Web) -> None:
    page = await new_page(browser, web, lang="en")
    await sign_in(page, "disp")
    await page.goto("/dispatch?date=2020-01-05")  # a Sunday long past: nothing planned
    assert "No routes for this day yet." in await page.locator("main").inner_text()
    await page.context.close()
