"""Acquisition against the real broker and Postgres: order, open, receive, close."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from services.acquisition.spec import SPEC
from tests.support import (
    Infra,
    cloud_event,
    events_of,
    eventually,
    new_env,
    produce,
    read_topic,
    running_service,
    token,
)

pytestmark = pytest.mark.integration

STAFF = token("acquisitions")
ISBN = "9787020002207"


def order_body(quantity: int = 3, distribution: list[dict] | None = None, *,
               vendor_id: str = "V-XINHUA", fund_code: str = "F-2026-BOOKS",
               currency: str = "CNY", unit_price: str = "38.50") -> dict[str, Any]:
    return {
        "vendor_id": vendor_id, "fund_code": fund_code, "currency": currency,
        "lines": [{
            "isbn": "978-7-02-000220-7", "title": "Fortress Besieged", "author": "Qian Zhongshu",
            "publisher": "People's Literature", "year": 1991, "unit_price": unit_price,
            "quantity": quantity,
            "distribution": distribution
            if distribution is not None else [{"branch": "JX-HN-01", "copies": 2},
                                              {"branch": "JX-HY-02", "copies": 1}],
        }],
    }


async def setup_vendor_and_fund(client: httpx.AsyncClient, budget: str = "1000.00") -> None:
    r = await client.post("/vendors", json={"vendor_id": "V-XINHUA", "name": "Xinhua Books"},
                          headers=STAFF)
    assert r.status_code == 201, r.text
    r = await client.post("/funds", json={"fund_code": "F-2026-BOOKS", "name": "Books 2026",
                                          "budget": budget, "currency": "CNY"}, headers=STAFF)
    assert r.status_code == 201, r.text


async def fund(client: httpx.AsyncClient) -> dict[str, str]:
    r = await client.get("/funds/F-2026-BOOKS", headers=STAFF)
    assert r.status_code == 200, r.text
    return r.json()


def loc_of(response: httpx.Response) -> list[list]:
    return [e["loc"] for e in response.json()["detail"]]


async def test_order_is_opened_received_in_two_parts_and_closed(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await setup_vendor_and_fund(client)
        r = await client.post("/orders", json=order_body(), headers=STAFF)
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "draft"
        assert [w["kind"] for w in r.json()["warnings"]] == []
        order_id = r.json()["order_id"]
        assert (await fund(client))["encumbered"] == "0.00"

        r = await client.post(f"/orders/{order_id}/open", headers=STAFF)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "open"
        assert r.json()["total"] == "115.50"
        balance = await fund(client)
        assert (balance["encumbered"], balance["spent"], balance["available"]) == \
            ("115.50", "0.00", "884.50")

        records = await read_topic(settings, "acquisition.orders", at_least=1)
        opened = events_of(records, "acquisition.order_opened")
        assert len(opened) == 1
        assert records[0].key == order_id.encode()
        assert opened[0]["subject"] == order_id
        line = opened[0]["data"]["lines"][0]
        assert line["isbn"] == ISBN  # stored and announced as ISBN-13
        assert line["unit_price"] == "38.50" and line["quantity"] == 3
        assert line["distribution"] == [{"branch": "JX-HN-01", "copies": 2},
                                        {"branch": "JX-HY-02", "copies": 1}]
        line_id = line["line_id"]

        r = await client.post(f"/orders/{order_id}/receipts",
                              json={"line_id": line_id, "quantity": 2}, headers=STAFF)
        assert r.status_code == 201, r.text
        first = r.json()["copies"]
        assert [c["owning_branch"] for c in first] == ["JX-HN-01", "JX-HN-01"]

        r = await client.post(f"/orders/{order_id}/receipts",
                              json={"line_id": line_id, "quantity": 2}, headers=STAFF)
        assert r.status_code == 409, r.text
        assert r.json()["detail"].startswith("quantity: ") and "only 1 remain" in \
            r.json()["detail"]

        balance = await fund(client)  # receiving moves no money; paying does
        assert (balance["encumbered"], balance["spent"]) == ("115.50", "0.00")
        r = await client.get(f"/orders/{order_id}", headers=STAFF)
        assert r.json()["status"] == "partially_received"

        r = await client.post(f"/orders/{order_id}/receipts",
                              json={"line_id": line_id, "quantity": 1}, headers=STAFF)
        assert r.status_code == 201, r.text
        second = r.json()["copies"]
        assert [c["owning_branch"] for c in second] == ["JX-HY-02"]

        r = await client.get(f"/orders/{order_id}", headers=token("cataloger"))
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "received"  # every copy here; the invoice is not paid
        r = await client.post("/invoices", headers=STAFF, json={
            "vendor_id": "V-XINHUA", "invoice_number": "INV-1", "currency": "CNY",
            "lines": [{"order_id": order_id, "line_id": line_id, "quantity": 3,
                       "amount": "118.00"}]})
        assert r.status_code == 201, r.text
        r = await client.post(f"/invoices/{r.json()['invoice_id']}/pay", headers=STAFF)
        assert r.status_code == 200, r.text
        assert (r.json()["lines"][0]["relieved"], r.json()["lines"][0]["variance"]) == (
            "115.50", "2.50")
        balance = await fund(client)
        assert (balance["encumbered"], balance["spent"], balance["available"]) == \
            ("0.00", "118.00", "882.00")
        r = await client.get(f"/orders/{order_id}", headers=token("cataloger"))
        view = r.json()
        assert view["status"] == "closed"
        assert view["lines"][0]["received"] == 3
        assert [(d["branch"], d["copies"], d["received"])
                for d in view["lines"][0]["distribution"]] == [("JX-HN-01", 2, 2),
                                                                ("JX-HY-02", 1, 1)]

        r = await client.post(f"/orders/{order_id}/receipts",
                              json={"line_id": line_id, "quantity": 1}, headers=STAFF)
        assert r.status_code == 409  # closed

        records = await read_topic(settings, "acquisition.orders", at_least=4, settle=1.0)
        types = [e["type"] for e in events_of(records)]
        assert types == ["acquisition.order_opened", "acquisition.copies_received",
                         "acquisition.copies_received", "acquisition.order_closed"]
        assert {r.key for r in records} == {order_id.encode()}
        received = events_of(records, "acquisition.copies_received")
        assert [e["data"]["copies"] for e in received] == [first, second]
        for event in received:
            assert event["data"]["isbn"] == ISBN
            assert event["data"]["title"] == "Fortress Besieged"
            assert event["data"]["author"] == "Qian Zhongshu"
            assert event["data"]["line_id"] == line_id
            assert event["data"]["received_at"]


async def test_opening_past_the_budget_is_refused_without_an_event(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await setup_vendor_and_fund(client, budget="100.00")
        r = await client.post("/orders", json=order_body(3), headers=STAFF)
        too_big = r.json()["order_id"]
        r = await client.post(f"/orders/{too_big}/open", headers=STAFF)
        assert r.status_code == 409, r.text
        assert "by 15.50 CNY" in r.json()["detail"]
        balance = await fund(client)
        assert (balance["encumbered"], balance["available"]) == ("0.00", "100.00")
        r = await client.get(f"/orders/{too_big}", headers=STAFF)
        assert r.json()["status"] == "draft"

        r = await client.post(f"/orders/{too_big}/receipts",
                              json={"line_id": "x", "quantity": 1}, headers=STAFF)
        assert r.status_code == 409  # a draft receives nothing

        r = await client.post("/orders", json=order_body(2, [{"branch": "JX-HN-01",
                                                              "copies": 2}]), headers=STAFF)
        fits = r.json()["order_id"]
        r = await client.post(f"/orders/{fits}/open", headers=STAFF)
        assert r.status_code == 200, r.text
        r = await client.post(f"/orders/{fits}/open", headers=STAFF)
        assert r.status_code == 409  # already open

        # The order that fits was announced after the refused one would have been.
        records = await read_topic(settings, "acquisition.orders", at_least=1, settle=1.0)
        assert [e["subject"] for e in events_of(records, "acquisition.order_opened")] == [fits]


async def test_bad_input_names_the_field(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await setup_vendor_and_fund(client)

        r = await client.post("/orders", json=order_body(2), headers=STAFF)
        assert r.status_code == 422
        assert loc_of(r) == [["body", "lines", 0, "distribution"]]
        assert "add up to 3, but the line orders 2" in r.json()["detail"][0]["msg"]

        body = order_body()
        del body["lines"][0]["title"]
        r = await client.post("/orders", json=body, headers=STAFF)
        assert r.status_code == 422
        assert ["body", "lines", 0, "title"] in loc_of(r)

        body = order_body()
        body["lines"][0]["isbn"] = ""
        r = await client.post("/orders", json=body, headers=STAFF)
        assert r.status_code == 422 and loc_of(r) == [["body", "lines", 0, "isbn"]]

        r = await client.post("/orders", json=order_body(vendor_id="V-NOBODY"), headers=STAFF)
        assert r.status_code == 422 and loc_of(r) == [["body", "vendor_id"]]
        r = await client.post("/orders", json=order_body(fund_code="F-NONE"), headers=STAFF)
        assert r.status_code == 422 and loc_of(r) == [["body", "fund_code"]]
        r = await client.post("/orders", json=order_body(currency="EUR"), headers=STAFF)
        assert r.status_code == 422 and loc_of(r) == [["body", "currency"]]
        r = await client.post("/orders", json=order_body(unit_price="-1.00"), headers=STAFF)
        assert r.status_code == 422 and ["body", "lines", 0, "unit_price"] in loc_of(r)

        r = await client.post("/funds", json={"fund_code": "F2", "name": "x", "budget": "ten",
                                              "currency": "CNY"}, headers=STAFF)
        assert r.status_code == 422 and ["body", "budget"] in loc_of(r)
        r = await client.post("/vendors", json={"vendor_id": "V-XINHUA", "name": "Again"},
                              headers=STAFF)
        assert r.status_code == 409

        r = await client.post("/orders", json=order_body(), headers=STAFF)
        order_id = r.json()["order_id"]
        await client.post(f"/orders/{order_id}/open", headers=STAFF)
        r = await client.post(f"/orders/{order_id}/receipts",
                              json={"line_id": "no-such-line", "quantity": 1}, headers=STAFF)
        assert r.status_code == 422 and loc_of(r) == [["body", "line_id"]]
        r = await client.post(f"/orders/{order_id}/receipts",
                              json={"line_id": "no-such-line", "quantity": 0}, headers=STAFF)
        assert r.status_code == 422 and ["body", "quantity"] in loc_of(r)

        r = await client.get("/orders/no-such-order", headers=STAFF)
        assert r.status_code == 404
        r = await client.post("/orders/no-such-order/open", headers=STAFF)
        assert r.status_code == 404
        r = await client.get("/funds/F-NONE", headers=STAFF)
        assert r.status_code == 404


async def test_roles(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await setup_vendor_and_fund(client)
        r = await client.post("/orders", json=order_body(), headers=token("cataloger"))
        assert r.status_code == 403
        r = await client.post("/orders", json=order_body(),
                              headers=token("desk", site="JX-HN-01"))
        assert r.status_code == 403
        r = await client.post("/orders", json=order_body())
        assert r.status_code == 401
        r = await client.post("/orders", json=order_body(), headers=token("admin"))
        assert r.status_code == 201
        order_id = r.json()["order_id"]
        r = await client.post(f"/orders/{order_id}/open", headers=token("cataloger"))
        assert r.status_code == 403
        assert (await client.get(f"/orders/{order_id}", headers=STAFF)).json()["status"] == \
            "draft"
        r = await client.get(f"/orders/{order_id}", headers=token("cataloger"))
        assert r.status_code == 200
        r = await client.get("/funds/F-2026-BOOKS", headers=token("branch_system",
                                                                  site="JX-HN-01"))
        assert r.status_code == 403


def site_upserted(code: str, active: bool = True) -> dict:
    return cloud_event(
        "network.site_upserted", code,
        {"code": code, "name": code, "kind": "town", "lat": 30.75, "lon": 120.75,
         "hub": "JX-CENTRAL", "opening_hours": {"mon": [["09:00", "17:00"]]},
         "courier_days": ["mon"], "active": active},
        source="branchline/logistics",
    )


async def test_branches_are_checked_once_sites_are_known(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await setup_vendor_and_fund(client)
        unknown = order_body(1, [{"branch": "JX-ZZ-99", "copies": 1}])
        r = await client.post("/orders", json=unknown, headers=STAFF)
        assert r.status_code == 201  # no site known yet: accepted as given

        await produce(settings, "network.sites",
                      [site_upserted("JX-HN-01"), site_upserted("JX-HY-02"),
                       site_upserted("JX-OLD-01", active=False)])

        async def refused():
            r = await client.post("/orders", json=unknown, headers=STAFF)
            return r.status_code == 422 and r

        r = await eventually(refused, what="sites consumed")
        assert loc_of(r) == [["body", "lines", 0, "distribution", 0, "branch"]]
        assert "JX-ZZ-99" in r.json()["detail"][0]["msg"]

        r = await client.post("/orders", json=order_body(), headers=STAFF)
        assert r.status_code == 201, r.text
        retired = order_body(2, [{"branch": "JX-HN-01", "copies": 1},
                                 {"branch": "JX-OLD-01", "copies": 1}])
        r = await client.post("/orders", json=retired, headers=STAFF)
        assert r.status_code == 422
        assert loc_of(r) == [["body", "lines", 0, "distribution", 1, "branch"]]


async def test_cancelling_an_open_order_returns_what_was_not_received(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await setup_vendor_and_fund(client)
        order_id = (await client.post("/orders", json=order_body(), headers=STAFF)).json()[
            "order_id"]
        view = (await client.post(f"/orders/{order_id}/open", headers=STAFF)).json()
        line_id = view["lines"][0]["line_id"]
        r = await client.post(f"/orders/{order_id}/receipts",
                              json={"line_id": line_id, "quantity": 1}, headers=STAFF)
        assert r.status_code == 201
        r = await client.post(f"/orders/{order_id}/cancel", json={"reason": "out of print"},
                              headers=STAFF)
        # One copy came: the order is received (its invoice still to pay), not cancelled.
        assert r.status_code == 200 and r.json()["status"] == "received", r.text
        assert r.json()["lines"][0]["cancelled"] == 2
        balance = await fund(client)
        assert (balance["encumbered"], balance["spent"], balance["available"]) == \
            ("38.50", "0.00", "961.50")
        records = await read_topic(settings, "acquisition.orders", at_least=4)
        cancelled = events_of(records, "acquisition.order_cancelled")
        assert [e["data"] for e in cancelled] == [
            {"order_id": order_id, "line_ids": [line_id], "reason": "out of print",
             "lines": [{"line_id": line_id, "copies": 2}]}]
        [closed] = events_of(records, "acquisition.order_closed")
        assert closed["data"] == {"order_id": order_id, "received": 1, "cancelled": 2}


async def test_concurrent_requests_never_overdraw_a_line_or_a_fund(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await setup_vendor_and_fund(client, budget="100.00")
        one_copy = order_body(2, [{"branch": "JX-HN-01", "copies": 2}])  # 77.00 each
        orders = [(await client.post("/orders", json=one_copy, headers=STAFF)).json()["order_id"]
                  for _ in range(3)]
        opened = await asyncio.gather(*(client.post(f"/orders/{o}/open", headers=STAFF)
                                        for o in orders))
        assert sorted(r.status_code for r in opened) == [200, 409, 409]
        assert (await fund(client))["encumbered"] == "77.00"

        view = next(r.json() for r in opened if r.status_code == 200)
        line_id = view["lines"][0]["line_id"]
        receipts = await asyncio.gather(*(
            client.post(f"/orders/{view['order_id']}/receipts",
                        json={"line_id": line_id, "quantity": 1}, headers=STAFF)
            for _ in range(3)))
        assert sorted(r.status_code for r in receipts) == [201, 201, 409]
        balance = await fund(client)
        assert (balance["encumbered"], balance["spent"]) == ("77.00", "0.00")
        r = await client.get(f"/orders/{view['order_id']}", headers=STAFF)
        assert r.json()["status"] == "received" and r.json()["lines"][0]["received"] == 2
