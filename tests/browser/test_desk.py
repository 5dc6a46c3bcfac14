"""The branch desk in a browser: check out, check in a book of this branch (reshelve) and
one of another (send it on), resolve the anomaly that makes, and another site's desk is
out of bounds."""

from __future__ import annotations

import uuid
from typing import Any

from playwright.async_api import expect

from tests.browser.conftest import DESK_SITE, Web, new_page, shot, sign_in
from tests.support import eventually, item_cataloged, produce

TONGXIANG = "JX-TX-01"


async def shelved_item(web: Web, owner: str) -> str:
    """A catalogued copy on its owner's shelf, as circulation learns it from cataloging."""
    barcode = f"BT{uuid.uuid4().hex[:10].upper()}"
    await produce(web.stack.settings, "cataloging.items", [item_cataloged(barcode, owner)])

    async def available() -> bool:
        view = await web.api("GET", "circulation", f"/items/{barcode}")
        return bool(view["status"] == "available" and view["site"] == owner)

    await eventually(available, what=f"{barcode} on the shelf at {owner}")
    return barcode


async def test_desk_checks_out_and_in_and_says_what_to_do(browser: Any, web: Web) -> None:
    ours, theirs = await shelved_item(web, DESK_SITE), await shelved_item(web, TONGXIANG)
    page = await new_page(browser, web)
    await sign_in(page, "desk-hn")
    assert page.url.endswith(f"/desk/{DESK_SITE}")  # a desk lands on its own site
    assert await page.evaluate("document.activeElement.id") == "checkin-barcode"

    await page.fill("#checkout-patron", "R-0042")
    await page.fill("#checkout-barcode", ours)
    await page.press("#checkout-barcode", "Enter")
    await expect(page.locator("#answer")).to_contain_text("已借出")
    view = await web.api("GET", "circulation", f"/items/{ours}")
    assert view["status"] == "on_loan" and view["loan"]["patron"] == "R-0042"

    await page.fill("#checkin-barcode", ours)  # as a scanner does: the code, then Enter
    await page.press("#checkin-barcode", "Enter")
    answer = page.locator("#answer")
    await expect(answer).to_have_class("answer reshelve")
    await expect(answer).to_contain_text("上架")

    await page.fill("#checkin-barcode", theirs)
    await page.press("#checkin-barcode", "Enter")
    await expect(answer).to_have_class("answer send")
    await expect(answer).to_contain_text("送往 Tongxiang")
    await expect(page.locator("section[aria-labelledby=tr-2]")).to_contain_text(theirs)
    await shot(page, "desk-checkin-desktop")

    # Returned here while on Tongxiang's shelf: an anomaly the desk resolves.
    item = page.locator("ul.anomalies li", has_text=theirs)
    await item.locator("input[name=resolution]").fill("读者在本馆归还，已送回桐乡")
    await item.locator("button").click()
    await expect(page.locator("[role=status].ok")).to_contain_text("已标记为已处理")
    await expect(page.locator("ul.anomalies li", has_text=theirs)).to_have_count(0)
    await page.context.close()


async def test_desk_on_a_phone_and_another_sites_desk(browser: Any, web: Web) -> None:
    ours = await shelved_item(web, DESK_SITE)
    page = await new_page(browser, web, phone=True)
    await sign_in(page, "desk-hn")
    await page.fill("#checkin-barcode", ours)  # already on this shelf: a quick answer
    await page.press("#checkin-barcode", "Enter")
    await expect(page.locator("#answer.reshelve")).to_contain_text("上架")
    await shot(page, "desk-checkin-phone")

    response = await page.goto(f"/desk/{TONGXIANG}")
    assert response.status == 403
    assert "无权访问" in await page.locator("h1").inner_text()
    await page.context.close()


async def test_desk_in_english(browser: Any, web: Web) -> None:
    page = await new_page(browser, web, lang="en")
    await sign_in(page, "desk-hn")
    await page.fill("#checkin-barcode", f"NOPE{uuid.uuid4().hex[:6].upper()}")
    await page.press("#checkin-barcode", "Enter")
    await expect(page.locator("#answer.problem")).to_contain_text("not in the system")
    await page.context.close()
