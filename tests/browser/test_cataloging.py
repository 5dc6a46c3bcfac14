"""The cataloging pages in a browser: received copies wait in the queue lacking a label
(CATALOG_AUTO_COMPLETE is off here), a CNMARC file imported through the page classifies
their title (progress to 100% and the per-record report), their labels are printed and
they are completed out of the queue; then a Chinese search shows the holdings."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from pymarc import Field, Record, Subfield

from tests.browser.conftest import Web, new_page, shot, sign_in
from tests.integration.test_cataloging import cnmarc_record, marc_file

WEICHENG = ("978-7-02-002475-9", "围城", "钱锺书", "人民文学出版社", "1991")


async def receive_copies(web: Web, isbn: str, title: str) -> None:
    """An order of two copies (Haining, Tongxiang), opened and received, through the API."""
    tag = uuid.uuid4().hex[:6].upper()
    await web.api("POST", "acquisition", "/vendors", "acquisitions",
                  {"vendor_id": f"V-{tag}", "name": "新华书店"})
    await web.api("POST", "acquisition", "/funds", "acquisitions",
                  {"fund_code": f"F-{tag}", "name": "中文图书", "budget": "500.00",
                   "currency": "CNY"})
    created = await web.api("POST", "acquisition", "/orders", "acquisitions", {
        "vendor_id": f"V-{tag}", "fund_code": f"F-{tag}", "currency": "CNY",
        "lines": [{"isbn": isbn, "title": title, "unit_price": "39.00", "quantity": 2,
                   "distribution": [{"branch": "JX-HN-01", "copies": 1},
                                    {"branch": "JX-TX-01", "copies": 1}]}]})
    order = await web.api("POST", "acquisition", f"/orders/{created['order_id']}/open",
                          "acquisitions")
    await web.api("POST", "acquisition", f"/orders/{created['order_id']}/receipts",
                  "acquisitions", {"line_id": order["lines"][0]["line_id"], "quantity": 2})


async def reload_until(page: Any, url: str, selector: str, count: int,
                       seconds: float = 20) -> None:
    """Copies travel through Kafka: reload until `selector` matches `count` elements."""
    deadline = time.monotonic() + seconds
    while True:
        await page.goto(url)
        found = await page.locator(selector).count()
        if found == count:
            return
        assert time.monotonic() < deadline, f"{selector}: {found} after {seconds} s, not {count}"
        await asyncio.sleep(1)


async def test_queue_import_labels_complete_and_search(browser: Any, web: Web) -> None:
    isbn, title = WEICHENG[0], WEICHENG[1]
    await receive_copies(web, isbn, title)
    page = await new_page(browser, web)
    await sign_in(page, "cat")
    assert page.url.endswith("/cataloging")
    mine = f"#queue tbody tr:has-text('{title}')"
    await reload_until(page, "/cataloging", mine, 2)
    rows = page.locator(mine)
    for n in range(2):  # a brief bib from the order: no record, no class, no label yet
        lacks = await rows.nth(n).locator("[data-lack]").evaluate_all(
            "els => els.map(e => e.dataset.lack)")
        assert set(lacks) == {"full_record", "call_number", "label"}

    # completing them now is refused, and the page says why
    for box in await page.locator(f"{mine} input[name=barcode]").all():
        await box.check()
    await page.click("button[value=complete]")
    assert await page.locator("#refused tbody tr").count() == 2
    assert await page.locator(mine).count() == 2
    await shot(page, "cataloging-queue-desktop")

    # the national agency's records, with one that has no title, imported on the page
    untitled = Record(force_utf8=True)
    untitled.add_field(Field(tag="010", indicators=[" ", " "],
                             subfields=[Subfield("a", "978-7-5063-6543-7")]))
    data = marc_file(cnmarc_record(*WEICHENG), untitled,
                     cnmarc_record("978-7-5321-5637-2", "繁花", "金宇澄", "上海文艺出版社",
                                   "2013"))
    await page.goto("/cataloging/imports")
    await page.set_input_files("#marc-file", files=[{
        "name": "cnmarc.mrc", "mimeType": "application/marc", "buffer": data}])
    await page.select_option("#marc-format", "unimarc")
    await page.click("form[action='/cataloging/imports'] button[type=submit]")
    await page.wait_for_url("**/cataloging/imports/*")
    await page.wait_for_selector("#report", timeout=20_000)  # reloaded when the job ends
    assert await page.locator("#job-progress").get_attribute("value") == "100.0"
    assert await page.locator("#report tbody tr").count() == 3
    rejected = page.locator("#rejected tbody tr")
    assert await rejected.count() == 1
    assert (await rejected.locator("td").first.inner_text()) == "1"  # its position
    await shot(page, "cataloging-import-desktop")

    # classified now: only the label is missing; print the labels, then complete
    await page.goto("/cataloging?lacks=label")
    rows = page.locator(mine)
    assert await rows.count() == 2
    for n in range(2):
        lacks = await rows.nth(n).locator("[data-lack]").evaluate_all(
            "els => els.map(e => e.dataset.lack)")
        assert lacks == ["label"]
    for box in await page.locator(f"{mine} input[name=barcode]").all():
        await box.check()
    await page.click("button[value=labels]")
    labels = page.locator("#labels tbody tr")
    assert await labels.count() == 2
    assert "I247.5/" in await labels.first.inner_text()
    assert await page.locator(mine).count() == 0  # none lacks a label any more
    await page.goto("/cataloging")
    for box in await page.locator(f"{mine} input[name=barcode]").all():
        await box.check()
    await page.click("button[value=complete]")
    assert "已完成 2 册" in await page.locator("#outcome").inner_text()
    await reload_until(page, "/cataloging", mine, 0)

    # the Chinese title is found, with a copy owned by each branch
    await page.fill("#q", "围城")
    await page.press("#q", "Enter")
    await page.wait_for_url("**/cataloging/search?q=*")
    result = page.locator("article.result", has_text=title).first
    assert await result.locator("tr[data-branch='JX-HN-01'] td.num").first.inner_text() == "1"
    assert await result.locator("tr[data-branch='JX-TX-01'] td.num").first.inner_text() == "1"
    # facets come from each title's holdings summary, refreshed by a job every 0.5 s
    await reload_until(page, page.url, "#facets a:has-text('Haining')", 1)
    await shot(page, "cataloging-search-desktop")
    await page.context.close()
