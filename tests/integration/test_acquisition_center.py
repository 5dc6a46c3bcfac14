"""The acquisition center's work on the real broker and Postgres: vendors and funds by year,
distribution formulas, warnings, split events for large orders, line cancels, invoices and
their money, rollover, EDIFACT and CSV exchange."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import col

from services.acquisition import edifact, handlers
from services.acquisition.models import PurchaseOrder, ReceivedCopy
from services.acquisition.spec import SPEC
from tests.support import (
    Infra,
    events_of,
    eventually,
    item_cataloged,
    new_env,
    produce,
    read_topic,
    running_service,
    token,
)

pytestmark = pytest.mark.integration

STAFF = token("acquisitions")
ISBN = "9787020002207"


async def setup(client: httpx.AsyncClient, budget: str = "1000.00", **fund: Any) -> None:
    r = await client.post("/vendors", headers=STAFF, json={
        "vendor_id": "V-XH", "name": "Xinhua", "discount_percent": "10", "gln": "6901234567892",
        "email": "orders@xinhua.example", "currency": "CNY"})
    assert r.status_code == 201, r.text
    r = await client.post("/funds", headers=STAFF, json={
        "fund_code": "F-2026", "name": "Books 2026", "budget": budget, "currency": "CNY",
        "fiscal_year": 2026, **fund})
    assert r.status_code == 201, r.text


def line(quantity: int = 3, **extra: Any) -> dict[str, Any]:
    return {"isbn": "7-02-000220-X", "title": "Fortress Besieged", "unit_price": "40.00",
            "quantity": quantity, **extra}


async def create(client: httpx.AsyncClient, *lines: dict[str, Any]) -> dict[str, Any]:
    r = await client.post("/orders", headers=STAFF, json={
        "vendor_id": "V-XH", "fund_code": "F-2026", "currency": "CNY", "lines": list(lines)})
    assert r.status_code == 201, r.text
    result: dict[str, Any] = r.json()
    return result


async def balance(client: httpx.AsyncClient, code: str = "F-2026") -> tuple[str, str, str]:
    f = (await client.get(f"/funds/{code}", headers=STAFF)).json()
    return f["encumbered"], f["spent"], f["available"]


async def test_formulas_stack_and_what_is_left_is_shown_until_opening(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await setup(client)
        r = await client.put("/distribution-formulas/county", headers=STAFF,
                             json={"entries": [{"branch": "A", "copies": 2},
                                               {"branch": "B", "copies": 1}]})
        assert r.status_code == 200 and r.json()["copies"] == 3
        r = await client.put("/distribution-formulas/bad", headers=STAFF,
                             json={"entries": [{"branch": "A", "copies": 0}]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "copies"

        created = await create(client, line(5, distribution=[{"branch": "Z", "copies": 1}],
                                            formulas=["county", "county"]))
        kinds = {w["kind"]: w for w in created["warnings"]}
        assert kinds["not_applied"]["detail"] == {"formula": "county", "branch": "B",
                                                  "copies": 1}
        view = (await client.get(f"/orders/{created['order_id']}", headers=STAFF)).json()
        assert [(d["branch"], d["copies"]) for d in view["lines"][0]["distribution"]] == [
            ("Z", 1), ("A", 3), ("B", 1)]
        assert view["lines"][0]["unallocated"] == 0

        short = await create(client, line(6, formulas=["county"]))
        # the first order's draft is another order of the same ISBN: warned as a duplicate
        assert [w["kind"] for w in short["warnings"]] == ["unallocated", "duplicate"]
        assert short["warnings"][0]["field"] == "lines.0.distribution"
        r = await client.post(f"/orders/{short['order_id']}/open", headers=STAFF)
        assert r.status_code == 409 and "3 of 6 copies have no branch" in r.json()["detail"]

        r = await client.post("/orders", headers=STAFF, json={
            "vendor_id": "V-XH", "fund_code": "F-2026", "currency": "CNY",
            "lines": [line(2, formulas=["nope"])]})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "lines", 0, "formulas", 0]


async def test_stop_and_warn_percentages_and_line_funds(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await setup(client, "1000.00", warn_percent="50", stop_percent="80")
        r = await client.post("/funds", headers=STAFF, json={
            "fund_code": "F-KIDS", "name": "Children", "budget": "100.00", "currency": "CNY"})
        assert r.status_code == 201
        # 40.00 less 10 % = 36.00 a copy; 20 copies = 720.00 (past 50 %, under 80 %)
        first = await create(client, line(20, distribution=[{"branch": "A", "copies": 20}]))
        r = await client.post(f"/orders/{first['order_id']}/open", headers=STAFF)
        assert r.status_code == 200, r.text
        assert [w["kind"] for w in r.json()["warnings"]] == ["fund_warn"]
        assert await balance(client) == ("720.00", "0.00", "280.00")
        assert (await client.get("/funds/F-2026", headers=STAFF)).json()["warning"] is True

        # 3 more copies = 108.00 → 828.00 > 800.00 (80 %): refused naming fund and shortfall
        second = await create(client, line(3, distribution=[{"branch": "A", "copies": 3}]),
                              line(1, distribution=[{"branch": "A", "copies": 1}],
                                   fund_code="F-KIDS"))
        r = await client.post(f"/orders/{second['order_id']}/open", headers=STAFF)
        assert r.status_code == 409
        assert "fund 'F-2026'" in r.json()["detail"] and "by 28.00 CNY" in r.json()["detail"]
        assert await balance(client, "F-KIDS") == ("0.00", "0.00", "100.00")  # all or nothing

        third = await create(client, line(1, distribution=[{"branch": "A", "copies": 1}],
                                          fund_code="F-KIDS"))
        r = await client.post(f"/orders/{third['order_id']}/open", headers=STAFF)
        assert r.status_code == 200
        assert r.json()["lines"][0]["fund_code"] == "F-KIDS"
        assert await balance(client, "F-KIDS") == ("36.00", "0.00", "64.00")
        assert await balance(client) == ("720.00", "0.00", "280.00")


async def test_line_cancel_invoice_variance_and_close(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await setup(client)
        created = await create(client, line(4, distribution=[{"branch": "A", "copies": 2},
                                                             {"branch": "B", "copies": 2}]))
        order_id = created["order_id"]
        view = (await client.post(f"/orders/{order_id}/open", headers=STAFF)).json()
        line_id = view["lines"][0]["line_id"]
        assert await balance(client) == ("144.00", "0.00", "856.00")

        r = await client.post(f"/orders/{order_id}/lines/{line_id}/cancel", headers=STAFF,
                              json={"copies": 5, "reason": "out of print"})
        assert r.status_code == 409
        r = await client.post(f"/orders/{order_id}/lines/{line_id}/cancel", headers=STAFF,
                              json={"copies": 1, "reason": "out of print"})
        assert r.status_code == 200, r.text
        shares = [(d["branch"], d["copies"], d["cancelled"])
                  for d in r.json()["lines"][0]["distribution"]]
        assert shares == [("A", 2, 0), ("B", 2, 1)]  # cancelled from the last branch back
        assert await balance(client) == ("108.00", "0.00", "892.00")

        r = await client.get("/receiving", headers=STAFF, params={"isbn": "702000220X"})
        assert [(w["line_id"], w["expected"]) for w in r.json()] == [(line_id, 3)]
        r = await client.post(f"/orders/{order_id}/receipts", headers=STAFF,
                              json={"lines": [{"line_id": line_id, "quantity": 3}]})
        assert r.status_code == 201
        assert [c["owning_branch"] for c in r.json()["copies"]] == ["A", "A", "B"]
        assert (await client.get(f"/orders/{order_id}", headers=STAFF)).json()["status"] == \
            "received"

        invoice = {"vendor_id": "V-XH", "invoice_number": "2026-001", "currency": "CNY",
                   "lines": [{"order_id": order_id, "line_id": line_id, "quantity": 3,
                              "amount": "110.40"}]}
        r = await client.post("/invoices", headers=STAFF, json=invoice)
        assert r.status_code == 201, r.text
        invoice_id = r.json()["invoice_id"]
        assert (await client.post("/invoices", headers=STAFF, json=invoice)).status_code == 409
        bad = {**invoice, "invoice_number": "2026-002",
               "lines": [{**invoice["lines"][0], "line_id": "nope"}]}
        r = await client.post("/invoices", headers=STAFF, json=bad)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == [
            "body", "lines", 0, "line_id"]

        r = await client.post(f"/invoices/{invoice_id}/pay", headers=STAFF)
        assert r.status_code == 200
        paid = r.json()["lines"][0]
        assert (paid["relieved"], paid["variance"]) == ("108.00", "2.40")
        assert await balance(client) == ("0.00", "110.40", "889.60")
        assert (await client.post(f"/invoices/{invoice_id}/pay",
                                  headers=STAFF)).status_code == 409
        view = (await client.get(f"/orders/{order_id}", headers=STAFF)).json()
        assert view["status"] == "closed"
        assert (view["lines"][0]["invoiced"], view["lines"][0]["spent"]) == (3, "110.40")

        records = await read_topic(settings, "acquisition.orders", at_least=4, settle=1.0)
        assert [e["type"] for e in events_of(records)] == [
            "acquisition.order_opened", "acquisition.order_cancelled",
            "acquisition.copies_received", "acquisition.order_closed"]
        [cancelled] = events_of(records, "acquisition.order_cancelled")
        assert cancelled["data"]["lines"] == [{"line_id": line_id, "copies": 1}]


async def test_rollover_moves_open_encumbrances_to_next_years_fund(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await setup(client)
        created = await create(client, line(2, distribution=[{"branch": "A", "copies": 2}]))
        await client.post(f"/orders/{created['order_id']}/open", headers=STAFF)
        r = await client.post("/funds", headers=STAFF, json={
            "fund_code": "F-2027", "name": "Books 2027", "budget": "500.00",
            "currency": "CNY", "fiscal_year": 2027})
        assert r.status_code == 201
        r = await client.post("/funds/F-2026/rollover", headers=STAFF,
                              json={"to_fund_code": "F-2026"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "to_fund_code"]
        r = await client.post("/funds/F-2026/rollover", headers=STAFF,
                              json={"to_fund_code": "F-2027"})
        assert r.status_code == 200, r.text
        assert (r.json()["lines"], r.json()["amount"]) == (1, "72.00")
        assert await balance(client) == ("0.00", "0.00", "1000.00")
        assert await balance(client, "F-2027") == ("72.00", "0.00", "428.00")
        r = await client.post("/funds/F-2026/rollover", headers=STAFF,
                              json={"to_fund_code": "F-2027"})
        assert r.status_code == 409
        r = await client.post("/orders", headers=STAFF, json={
            "vendor_id": "V-XH", "fund_code": "F-2026", "currency": "CNY", "lines": [line(1)]})
        assert r.status_code == 422 and "rollover" in r.json()["detail"][0]["msg"]
        years = (await client.get("/funds", headers=STAFF, params={"fiscal_year": 2027})).json()
        assert [f["fund_code"] for f in years] == ["F-2027"]


async def test_duplicates_are_warned_with_where_and_how_many(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await setup(client)
        await produce(settings, "cataloging.items", [item_cataloged("B1", "JX-HN-01"),
                                                     item_cataloged("B2", "JX-HN-01"),
                                                     item_cataloged("B3", "JX-HY-02")])
        first = await create(client, line(2, distribution=[{"branch": "A", "copies": 2}]))
        await client.post(f"/orders/{first['order_id']}/open", headers=STAFF)

        async def warned() -> Any:
            created = await create(client, line(1, distribution=[{"branch": "A",
                                                                  "copies": 1}]))
            dup = [w for w in created["warnings"] if w["kind"] == "duplicate"]
            return dup and sum(dup[0]["detail"]["held"].values()) == 3 and dup[0]

        dup = await eventually(warned, what="catalogued copies counted")
        assert dup["field"] == "lines.0.isbn"
        assert dup["detail"]["held"] == {"JX-HN-01": 2, "JX-HY-02": 1}
        assert {"order_id": first["order_id"], "copies": 2} in dup["detail"]["on_order"]

        r = await client.post("/orders", headers=STAFF, json={
            "vendor_id": "V-XH", "fund_code": "F-2026", "currency": "CNY",
            "lines": [line(1, isbn="978-0-00-000000-1")]})
        assert r.status_code == 201
        assert [w["kind"] for w in r.json()["warnings"]][:1] == ["invalid_isbn"]


async def test_a_large_order_goes_out_in_parts_each_under_the_budget(
    infra: Infra, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handlers, "EVENT_BUDGET", 4_000)
    monkeypatch.setattr(handlers, "COPIES_PER_EVENT", 7)
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await setup(client, "100000.00")
        lines = [line(2, isbn=f"97875000{n:05d}", title=f"Title {n} " + "x" * 100,
                      distribution=[{"branch": "A", "copies": 1}, {"branch": "B", "copies": 1}])
                 for n in range(60)]
        lines.append(line(20, distribution=[{"branch": "C", "copies": 20}]))
        created = await create(client, *lines)
        view = (await client.post(f"/orders/{created['order_id']}/open", headers=STAFF)).json()
        big = view["lines"][-1]["line_id"]
        r = await client.post(f"/orders/{created['order_id']}/receipts", headers=STAFF,
                              json={"line_id": big, "quantity": 20})
        assert r.status_code == 201 and len(r.json()["copies"]) == 20
        records = await read_topic(settings, "acquisition.orders", at_least=4, settle=1.5)
        opened = events_of(records, "acquisition.order_opened")
        assert len(opened) > 1
        assert [e["data"]["part"] for e in opened] == list(range(1, len(opened) + 1))
        assert {e["data"]["parts"] for e in opened} == {len(opened)}
        ids = [ln["line_id"] for e in opened for ln in e["data"]["lines"]]
        assert ids == [ln["line_id"] for ln in view["lines"]]  # every line once, in order
        for e in opened:
            assert len(json.dumps(e["data"]["lines"])) <= 4_000 + 600  # one line over at most
        received = events_of(records, "acquisition.copies_received")
        assert [len(e["data"]["copies"]) for e in received] == [7, 7, 6]
        assert [c["copy_id"] for e in received for c in e["data"]["copies"]] == [
            c["copy_id"] for c in r.json()["copies"]]


async def test_edifact_orders_out_and_invoic_in(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await setup(client)
        created = await create(client, line(3, distribution=[{"branch": "A", "copies": 2},
                                                             {"branch": "B", "copies": 1}],
                                            author="钱锺书", title="围城"))
        order_id = created["order_id"]
        r = await client.get(f"/orders/{order_id}/edifact", headers=STAFF)
        assert r.status_code == 409  # a draft is not sent
        view = (await client.post(f"/orders/{order_id}/open", headers=STAFF)).json()
        r = await client.get(f"/orders/{order_id}/edifact", headers=STAFF)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/edi")
        assert r.content.startswith(b"UNA:+.? 'UNB+UNOW:4+")  # a Chinese title: UTF-8
        sent = edifact.parse_orders(r.content)
        assert sent.order_id == order_id.replace("-", "") and sent.supplier_id == "6901234567892"
        [out] = sent.lines
        assert (out.line_ref, out.isbn, out.title, out.author, out.quantity, out.unit_price) == (
            view["lines"][0]["line_id"].replace("-", ""), ISBN, "围城", "钱锺书", 3,
            Decimal("40.00"))
        assert out.distribution == (("A", 2), ("B", 1))

        invoic = edifact.invoic_message(edifact.InvoiceIn(
            invoice_number="XH-77", issued=None, supplier_id="6901234567892",
            supplier_qualifier="14", currency="CNY", total=Decimal("108.00"),
            lines=(edifact.InvoiceLineIn(line_ref=out.line_ref, isbn=ISBN, quantity=3,
                                         amount=Decimal("108.00"), unit_price=None,
                                         position=1),)), interchange_ref="77")
        r = await client.post("/invoices/edifact", headers=STAFF, params={"vendor_id": "V-XH"},
                              files={"file": ("invoic.edi", invoic.encode())})
        assert r.status_code == 201, r.text
        [invoice] = r.json()
        assert (invoice["invoice_number"], invoice["source"], invoice["total"]) == (
            "XH-77", "edifact", "108.00")
        r = await client.post("/invoices/edifact", headers=STAFF, params={"vendor_id": "V-XH"},
                              files={"file": ("x.edi", b"this is not edifact")})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"][1].startswith("file")


async def test_a_quote_list_becomes_a_draft_order_or_names_every_bad_row(
    infra: Infra,
) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await setup(client)
        await client.put("/distribution-formulas/two", headers=STAFF,
                         json={"entries": [{"branch": "A", "copies": 1},
                                           {"branch": "B", "copies": 1}]})
        good = (b"isbn,quantity,price,formula,title\n"
                b"9787020002207,2,39.90,two,Fortress Besieged\n"
                b"9787544253994,2,45.00,two,Shadow\n")
        r = await client.post("/orders/import-quote", headers=STAFF,
                              params={"vendor_id": "V-XH", "fund_code": "F-2026"},
                              files={"file": ("quote.csv", good, "text/csv")})
        assert r.status_code == 201, r.text
        assert (r.json()["status"], r.json()["lines"]) == ("draft", 2)
        view = (await client.get(f"/orders/{r.json()['order_id']}", headers=STAFF)).json()
        assert [(ln["quantity"], ln["unit_price"], ln["unallocated"]) for ln in view["lines"]] \
            == [(2, "39.90", 0), (2, "45.00", 0)]

        bad = (b"isbn,quantity,price,formula\n"
               b"9787020002207,two,39.90,two\n"
               b"9787544253994,1,-3,two\n")
        r = await client.post("/orders/import-quote", headers=STAFF,
                              params={"vendor_id": "V-XH", "fund_code": "F-2026"},
                              files={"file": ("quote.csv", bad, "text/csv")})
        assert r.status_code == 422
        locs = [e["loc"] for e in r.json()["detail"]]
        assert locs == [["body", "file", "row2", "quantity"], ["body", "file", "row3", "price"]]
        orders = (await client.get("/orders", headers=STAFF)).json()
        assert len(orders) == 1  # nothing created from the bad file


async def test_lists_for_staff(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await setup(client)
        a = await create(client, line(1, distribution=[{"branch": "A", "copies": 1}]))
        await create(client, line(1, distribution=[{"branch": "A", "copies": 1}]))
        await client.post(f"/orders/{a['order_id']}/open", headers=STAFF)
        r = await client.get("/orders", headers=STAFF, params={"status": "open"})
        assert [o["order_id"] for o in r.json()] == [a["order_id"]]
        assert r.json()[0]["copies"] == 1
        r = await client.get("/orders", headers=STAFF, params={"status": "bogus"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "status"]
        r = await client.get("/vendors/V-XH", headers=token("cataloger"))
        assert r.json()["gln"] == "6901234567892"
        r = await client.post("/vendors", headers=STAFF, json={
            "vendor_id": "V2", "name": "x", "gln": "123", "discount_percent": "120"})
        assert r.status_code == 422
        assert {e["loc"][-1] for e in r.json()["detail"]} == {"gln", "discount_percent"}


async def test_report_counts_copies_ordered_and_received_per_branch(infra: Infra) -> None:
    """The period's days are the library's (Asia/Shanghai, UTC+8): 2026-03-01T16:30Z is
    March 2nd there, 2026-03-08T16:00Z already March 9th."""
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await setup(client)
        first = await create(client, line(4, distribution=[{"branch": "A", "copies": 3},
                                                           {"branch": "B", "copies": 1}]))
        view = (await client.post(f"/orders/{first['order_id']}/open", headers=STAFF)).json()
        first_line = view["lines"][0]["line_id"]
        r = await client.post(f"/orders/{first['order_id']}/lines/{first_line}/cancel",
                              headers=STAFF, json={"copies": 1, "reason": "out of print"})
        assert r.status_code == 200, r.text  # B's one copy: A 3 ordered, B 0
        r = await client.post(f"/orders/{first['order_id']}/receipts", headers=STAFF,
                              json={"line_id": first_line, "quantity": 2})
        a_copies = [c["copy_id"] for c in r.json()["copies"]]

        second = await create(client, line(3, distribution=[{"branch": "B", "copies": 1},
                                                            {"branch": "C", "copies": 2}]))
        view = (await client.post(f"/orders/{second['order_id']}/open", headers=STAFF)).json()
        r = await client.post(f"/orders/{second['order_id']}/receipts", headers=STAFF,
                              json={"line_id": view["lines"][0]["line_id"], "quantity": 3})
        [b_copy, c_early, c_late] = [c["copy_id"] for c in r.json()["copies"]]
        await create(client, line(5, distribution=[{"branch": "D", "copies": 5}]))  # a draft

        def at(text: str) -> datetime:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)

        async with client.service.uow() as uow:
            for order_id, opened in ((first["order_id"], "2026-03-01T16:30"),  # in: Mar 2
                                     (second["order_id"], "2026-03-08T16:00")):  # out: Mar 9
                await uow.session.execute(update(PurchaseOrder).where(
                    col(PurchaseOrder.order_id) == order_id).values(opened_at=at(opened)))
            for copies, received in ((a_copies, "2026-03-03T00:00"),
                                     ([b_copy], "2026-03-05T02:00"),
                                     ([c_early], "2026-03-01T15:59"),  # out: Mar 1 23:59
                                     ([c_late], "2026-03-08T15:59")):  # in: Mar 8 23:59
                await uow.session.execute(update(ReceivedCopy).where(
                    col(ReceivedCopy.copy_id).in_(copies)).values(received_at=at(received)))

        period = {"from": "2026-03-02", "to": "2026-03-08"}
        r = await client.get("/report", headers=STAFF, params=period)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "from": "2026-03-02", "to": "2026-03-08",
            "branches": [{"branch": "A", "ordered": 3, "received": 2},
                         {"branch": "B", "ordered": 0, "received": 1},
                         {"branch": "C", "ordered": 0, "received": 1}],
            "network": {"ordered": 3, "received": 4}}
        r = await client.get("/report", headers=token("dispatcher"),
                             params={"from": "2026-03-09", "to": "2026-03-09"})
        assert r.json()["branches"] == [{"branch": "B", "ordered": 1, "received": 0},
                                        {"branch": "C", "ordered": 2, "received": 0}]
        r = await client.get("/report", headers=token("cataloger"),
                             params={"from": "2025-01-01", "to": "2025-12-31"})
        assert r.json()["branches"] == [] and r.json()["network"] == {"ordered": 0,
                                                                      "received": 0}
        r = await client.get("/report", headers=token("desk", site="A"), params=period)
        assert r.status_code == 403

        r = await client.get("/report", headers=STAFF,
                             params={"from": "2026-03-08", "to": "2026-03-02"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "to"]
        r = await client.get("/report", headers=STAFF,
                             params={"from": "2025-01-01", "to": "2026-01-02"})  # 367 days
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "to"]
        r = await client.get("/report", headers=STAFF, params={"to": "2026-03-02"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "from"]
