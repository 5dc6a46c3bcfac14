"""The network report: figures from the services' APIs in a table, SVG bars, a CSV."""

from __future__ import annotations

import asyncio
import csv
import uuid
from pathlib import Path
from typing import Any

from tests.browser.conftest import Web, new_page, shot, sign_in

HAINING, HAIYAN = "JX-HN-01", "JX-HY-01"


async def bought_and_received(web: Web) -> None:
    """An order of 3 copies for Haining and Haiyan, opened and received today."""
    vendor, fund = f"V-{uuid.uuid4().hex[:6]}", f"F-{uuid.uuid4().hex[:6]}"
    await web.api("POST", "acquisition", "/vendors", "acquisitions",
                  {"vendor_id": vendor, "name": "新华书店"})
    await web.api("POST", "acquisition", "/funds", "acquisitions",
                  {"fund_code": fund, "name": "成人文学 2026", "budget": "10000.00",
                   "currency": "CNY"})
    created = await web.api("POST", "acquisition", "/orders", "acquisitions", {
        "vendor_id": vendor, "fund_code": fund, "currency": "CNY",
        "lines": [{"isbn": "7-02-000220-8", "title": "围城", "author": "钱锺书",
                   "unit_price": "38.50", "quantity": 3,
                   "distribution": [{"branch": HAINING, "copies": 2},
                                    {"branch": HAIYAN, "copies": 1}]}]})
    order_id = created["order_id"]
    order = await web.api("POST", "acquisition", f"/orders/{order_id}/open", "acquisitions")
    await web.api("POST", "acquisition", f"/orders/{order_id}/receipts", "acquisitions",
                  {"line_id": order["lines"][0]["line_id"], "quantity": 3})


async def test_the_report_shows_tables_charts_and_a_csv(browser: Any, web: Web) -> None:
    await bought_and_received(web)
    page = await new_page(browser, web)
    await sign_in(page, "boss")
    assert page.url.endswith("/report")
    table = page.locator("#report-table")
    assert await table.count() == 1
    row = table.locator("tbody tr", has_text=HAINING)
    cells = await row.locator("td").all_inner_texts()
    ordered, received = int(cells[0]), int(cells[1])
    assert ordered >= 2 and received >= 2
    total = await table.locator("tfoot td").all_inner_texts()
    assert int(total[1]) >= 3
    chart = page.locator("svg.bar-chart[data-key=received]")
    assert await chart.locator("rect").count() >= 2
    assert "Haining" in (await chart.locator("title").first.text_content() or "")
    headers = await table.locator("thead th").all_inner_texts()
    assert "借阅" in headers and "其中异地还书" in headers  # circulation's own figures
    await shot(page, "report-desktop")

    async with page.expect_download() as info:
        await page.click("#csv")
    download = await info.value
    path = Path(await download.path())
    text = await asyncio.to_thread(path.read_text, encoding="utf-8-sig")
    rows = list(csv.reader(text.splitlines()))
    assert rows[0][:5] == ["from", "to", "site", "name", "ordered"]
    by_site = {r[2]: r for r in rows[1:]}
    assert int(by_site[HAINING][5]) >= 2  # received
    assert by_site["*"]  # the network's total row
    await page.context.close()


async def test_a_dispatcher_sees_every_site_in_a_quiet_period(
        browser: Any, web: Web) -> None:
    page = await new_page(browser, web, lang="en")
    await sign_in(page, "disp")
    await page.goto("/report?from=2026-01-05&to=2026-01-11")
    text = await page.locator("main").inner_text()
    assert "Your role may not read acquisition figures" not in text
    assert await page.locator("#report-table tbody tr").count() == 20  # sites but the hub
    totals = await page.locator("#report-table tfoot td").all_inner_texts()
    assert totals[:4] == ["0", "0", "0", "0"]  # nothing ordered, received, lent, returned
    await page.context.close()
