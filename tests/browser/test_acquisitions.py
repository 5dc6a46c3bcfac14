"""The acquisitions pages in a browser: a vendor and a fund added on the page, an order of
three copies for two branches built line by line and opened (the fund's encumbrance and
its bar move), then received at the receiving desk by typing the ISBN."""

from __future__ import annotations

import random
import uuid
from typing import Any

from tests.browser.conftest import Web, new_page, shot, sign_in


def random_isbn() -> str:
    """A valid ISBN-13 nobody else in the run orders (so no duplicate warning is expected)."""
    digits = "978" + "".join(random.choice("0123456789") for _ in range(9))
    check = (10 - sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10) % 10
    return digits + str(check)


async def test_an_order_is_built_opened_and_received_on_the_pages(browser: Any,
                                                                  web: Web) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    vendor, fund, isbn = f"V-{tag}", f"F-{tag}", random_isbn()
    page = await new_page(browser, web)
    await sign_in(page, "acq")
    assert page.url.endswith("/acquisitions")

    # a vendor and a fund, each through its form
    await page.click("summary:has-text('新增供应商')")
    await page.fill("#v-id", vendor)
    await page.fill("#v-name", "浙江新华书店")
    await page.click("form[action='/acquisitions/vendors'] button[type=submit]")
    assert "供应商已保存" in await page.locator("#flash").inner_text()
    await page.click("summary:has-text('新增经费')")
    await page.fill("#f-code", fund)
    await page.fill("#f-name", "2026 中文图书")
    await page.fill("#f-budget", "1000.00")
    await page.click("form[action='/acquisitions/funds'] button[type=submit]")
    assert "经费已保存" in await page.locator("#flash").inner_text()
    row = page.locator(f"tr[data-fund='{fund}']")
    assert await row.locator("td.encumbered").inner_text() == "0.00"

    # the order: one line filled, a second added and left empty (it is left out)
    await page.goto("/acquisitions/orders/new")
    await page.select_option("#o-vendor", vendor)
    await page.select_option("#o-fund", fund)
    await page.fill("#l0-isbn", isbn)
    await page.fill("#l0-title", f"浏览器测试图书 {tag}")
    await page.fill("#l0-author", "钱锺书")
    await page.fill("#l0-price", "39.00")
    await page.fill("#l0-copies", "3")
    await page.fill("#l0-dist", "JX-HN-01:2, JX-TX-01:1")
    await page.click("button[value=add_line]")
    assert await page.locator("fieldset.order-line").count() == 2
    assert await page.input_value("#l0-dist") == "JX-HN-01:2, JX-TX-01:1"  # kept as typed
    await page.click("button[value=create]")
    await page.wait_for_url("**/acquisitions/orders/*")
    assert "草稿订单已保存" in await page.locator("#flash").inner_text()
    assert await page.locator("#order-status").inner_text() == "draft"
    await page.click("text=下单（预留经费）")
    assert "订单已下达" in await page.locator("#flash").inner_text()
    assert await page.locator("#order-status").inner_text() == "open"

    # the fund now has 3 copies at 39.00 encumbered, and its bar shows it
    await page.goto("/acquisitions")
    row = page.locator(f"tr[data-fund='{fund}']")
    assert await row.locator("td.encumbered").inner_text() == "117.00"
    assert await row.locator("td.available").inner_text() == "883.00"
    style = await row.locator(".bar span.encumbered").get_attribute("style")
    assert "width: 11.7%" in style
    await shot(page, "acquisitions-desktop")

    # receiving: type the ISBN, receive the three copies
    await page.goto("/acquisitions/receiving")
    await page.fill("#scan", isbn)
    await page.press("#scan", "Enter")
    await page.wait_for_url(f"**/acquisitions/receiving?isbn={isbn}")
    rows = page.locator("#worklist tbody tr")
    assert await rows.count() == 1
    assert "3" == await rows.locator("td.num").inner_text()
    await rows.locator("input[name=quantity]").fill("3")
    await rows.locator("button[type=submit]").click()
    flash = await page.locator("#flash").inner_text()
    assert "已验收 3 册" in flash and "JX-HN-01 × 2" in flash and "JX-TX-01 × 1" in flash
    assert await page.locator("#nothing").count() == 1  # nothing more to come for it

    order = (await web.api("GET", "acquisition", f"/orders?fund_code={fund}"))[0]
    assert order["status"] == "received" and order["received"] == 3
    await page.context.close()

    phone = await new_page(browser, web, phone=True)
    await sign_in(phone, "acq")
    await phone.goto("/acquisitions")
    assert await phone.locator(f"tr[data-fund='{fund}'] td.encumbered").inner_text() == "117.00"
    await shot(phone, "acquisitions-phone")
    await phone.context.close()


async def test_an_order_with_unplaced_copies_is_refused_when_opened(browser: Any,
                                                                   web: Web) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    await web.api("POST", "acquisition", "/vendors", "acquisitions",
                  {"vendor_id": f"V-{tag}", "name": "Vendor"})
    await web.api("POST", "acquisition", "/funds", "acquisitions",
                  {"fund_code": f"F-{tag}", "name": "Fund", "budget": "100.00",
                   "currency": "CNY"})
    page = await new_page(browser, web, lang="en")
    await sign_in(page, "acq")
    await page.goto("/acquisitions/orders/new")
    await page.select_option("#o-vendor", f"V-{tag}")
    await page.select_option("#o-fund", f"F-{tag}")
    await page.fill("#l0-isbn", random_isbn())
    await page.fill("#l0-title", "Unplaced")
    await page.fill("#l0-price", "10")
    await page.fill("#l0-copies", "2")
    await page.fill("#l0-dist", "JX-HN-01 one")  # unreadable: shown again, as typed
    await page.click("button[value=create]")
    assert "BRANCH:copies" in await page.locator("#problems").inner_text()
    assert await page.input_value("#l0-title") == "Unplaced"
    await page.fill("#l0-dist", "JX-HN-01:1")
    await page.click("button[value=create]")
    await page.wait_for_url("**/acquisitions/orders/*")
    assert "Draft order saved" in await page.locator("#flash").inner_text()
    assert "Unallocated: 1" in await page.locator("table").inner_text()
    await page.click("text=Open the order")
    assert await page.locator("#flash[role=alert]").count() == 1  # the 409, in its words
    assert await page.locator("#order-status").inner_text() == "draft"
    await page.context.close()


async def test_an_invoice_is_entered_and_paid_on_the_pages(browser: Any, web: Web) -> None:
    """A received order (set up through the API) is invoiced from its page: a refused
    currency and a vendor's invoice number seen twice come back on the form, as typed;
    paying moves the fund's money from encumbered to spent, with the line's variance."""
    tag = uuid.uuid4().hex[:6].upper()
    vendor, fund, number = f"V-{tag}", f"F-{tag}", f"INV-{tag}"
    await web.api("POST", "acquisition", "/vendors", "acquisitions",
                  {"vendor_id": vendor, "name": "Vendor"})
    await web.api("POST", "acquisition", "/funds", "acquisitions",
                  {"fund_code": fund, "name": "Fund", "budget": "500.00", "currency": "CNY"})
    created = await web.api("POST", "acquisition", "/orders", "acquisitions", {
        "vendor_id": vendor, "fund_code": fund, "currency": "CNY", "lines": [{
            "isbn": random_isbn(), "title": f"发票测试 {tag}", "unit_price": "25.00",
            "quantity": 2, "distribution": [{"branch": "JX-HN-01", "copies": 2}]}]})
    order_id = created["order_id"]
    await web.api("POST", "acquisition", f"/orders/{order_id}/open", "acquisitions")
    order = await web.api("GET", "acquisition", f"/orders/{order_id}")
    line_id = order["lines"][0]["line_id"]
    await web.api("POST", "acquisition", f"/orders/{order_id}/receipts", "acquisitions",
                  {"line_id": line_id, "quantity": 2})

    page = await new_page(browser, web)
    await sign_in(page, "acq")
    row = page.locator(f"tr[data-fund='{fund}']")
    assert await row.locator("td.encumbered").inner_text() == "50.00"
    assert await row.locator("td.spent").inner_text() == "0.00"

    # from the order page to its invoice form, prefilled with what came and is not billed
    await page.goto(f"/acquisitions/orders/{order_id}")
    await page.click("#enter-invoice")
    await page.wait_for_url(f"**/acquisitions/invoices/new?order_id={order_id}")
    assert await page.input_value(f"#q-{line_id}") == "2"
    assert await page.input_value(f"#p-{line_id}") == "25.00"
    assert await page.locator(f"tr[data-line='{line_id}'] td.to-invoice").inner_text() == "2"

    # another currency than the order's: the service's 422, at the field, values kept
    await page.fill("#i-number", number)
    await page.fill("#i-currency", "USD")
    await page.fill(f"#p-{line_id}", "26.00")
    await page.click("#invoice-form button[type=submit]")
    assert "USD" in await page.locator("#i-currency-err").inner_text()
    assert await page.get_attribute("#i-currency", "aria-invalid") == "true"
    assert await page.input_value("#i-number") == number
    assert await page.input_value(f"#p-{line_id}") == "26.00"
    await page.fill("#i-currency", "CNY")
    await page.click("#invoice-form button[type=submit]")
    await page.wait_for_url("**/acquisitions/invoices/*")
    invoice_url = page.url
    assert "发票已保存" in await page.locator("#flash").inner_text()
    assert await page.locator("#invoice-status").inner_text() == "draft"
    assert "52.00 CNY" == await page.locator("#invoice-total").inner_text()

    # the same vendor invoice number again: the 409, on the number, as typed
    await page.goto(f"/acquisitions/invoices/new?order_id={order_id}")
    assert await page.input_value(f"#q-{line_id}") == "0"  # both are on the unpaid invoice
    await page.fill("#i-number", number)
    await page.fill(f"#q-{line_id}", "1")
    await page.click("#invoice-form button[type=submit]")
    assert "already sent invoice" in await page.locator("#i-number-err").inner_text()
    assert await page.input_value(f"#q-{line_id}") == "1"

    # pay: the line relieves its 50.00 encumbered and spends the 52.00 billed
    await page.goto(invoice_url)
    await page.click("#pay-form button[type=submit]")
    assert "发票已付款" in await page.locator("#flash").inner_text()
    assert await page.locator("#invoice-status").inner_text() == "paid"
    line = page.locator(f"#invoice-lines tr[data-line='{line_id}']")
    assert await line.locator("td.relieved").inner_text() == "50.00"
    assert await line.locator("td.variance").inner_text() == "2.00"
    assert await page.locator("#pay-form").count() == 0
    await shot(page, "acquisitions-invoice-desktop")

    await page.goto("/acquisitions")
    row = page.locator(f"tr[data-fund='{fund}']")
    assert await row.locator("td.spent").inner_text() == "52.00"
    assert await row.locator("td.encumbered").inner_text() == "0.00"
    invoice_id = invoice_url.rsplit("/", 1)[1]
    await page.click(f"tr[data-invoice='{invoice_id}'] a")
    await page.wait_for_url(invoice_url)
    assert await page.locator("#invoice-status").inner_text() == "paid"
    await page.context.close()
