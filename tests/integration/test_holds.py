"""Holds across the network against the real broker and Postgres: placed, filled from the
right copy, moved to the pickup branch, put on the hold shelf, collected, cancelled,
expired; copies on order and new copies."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from services.circulation.handlers import expire_holds
from services.circulation.spec import SPEC
from tests.support import (
    Infra,
    ServiceClient,
    branch_event,
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

ADMIN = token("admin")
ISBN = "9787020002207"
#: A, B share hub H1; C is served by hub H2. B is closer to A than C is.
SITES = {"A": ("H1", 30.75, 120.75), "B": ("H1", 30.70, 120.70),
         "C": ("H2", 30.74, 120.76), "H1": ("H1", 30.77, 120.71), "H2": ("H2", 30.60, 120.90)}


def site_event(code: str) -> dict[str, Any]:
    hub, lat, lon = SITES[code]
    return cloud_event("network.site_upserted", code, {
        "code": code, "name": f"Site {code}", "kind": "hub" if code == hub else "town",
        "lat": lat, "lon": lon, "hub": hub, "opening_hours": {}, "courier_days": []},
        source="branchline/logistics")


def copy(barcode: str, owner: str, bib: str = "bib-1") -> dict[str, Any]:
    return cloud_event("cataloging.item_cataloged", barcode, {
        "barcode": barcode, "bib_id": bib, "isbn": ISBN if bib == "bib-1" else None,
        "title": "Wei Cheng", "call_number": "I247", "owning_branch": owner, "site": owner},
        source="branchline/cataloging")


async def item(client: ServiceClient, barcode: str) -> dict[str, Any]:
    r = await client.get(f"/items/{barcode}", headers=ADMIN)
    return r.json() if r.status_code == 200 else {}


async def until(client: ServiceClient, barcode: str, status: str, site: str | None = None,
                ) -> dict[str, Any]:
    async def reached() -> Any:
        view = await item(client, barcode)
        ok = view.get("status") == status and (site is None or view.get("site") == site)
        return ok and view

    result: dict[str, Any] = await eventually(reached, what=f"{barcode} {status} {site}")
    return result


async def setup(client: ServiceClient, settings: Any, copies: list[tuple[str, str]]) -> None:
    await produce(settings, "network.sites", [site_event(c) for c in SITES])
    await produce(settings, "cataloging.items", [copy(b, owner) for b, owner in copies])
    for barcode, owner in copies:
        await until(client, barcode, "available", owner)

    async def sites_known() -> bool:
        r = await client.post("/holds", json={"patron": "probe", "pickup_branch": "C",
                                              "bib_id": "none"}, headers=ADMIN)
        return r.status_code == 422 and r.json()["detail"][0]["type"] == "unknown_title"

    await eventually(sites_known, what="sites known to circulation")


async def place(client: ServiceClient, patron: str, pickup: str, **title: str) -> dict:
    body = {"patron": patron, "pickup_branch": pickup, **(title or {"bib_id": "bib-1"})}
    r = await client.post("/holds", json=body, headers=token("desk", site=pickup))
    assert r.status_code == 201, r.text
    result: dict[str, Any] = r.json()
    return result


async def post(client: ServiceClient, event: dict[str, Any]) -> None:
    branch = event["data"]["branch"]
    r = await client.post("/branch-events", json=event,
                          headers=token("branch_system", site=branch))
    assert r.status_code == 202, r.text


async def test_a_hold_elsewhere_travels_to_the_hold_shelf_and_is_collected(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await setup(client, settings, [("X1", "B")])
        await post(client, branch_event("branch.checkout", "B", "X1", patron="P-0"))
        await until(client, "X1", "on_loan")
        hold = await place(client, "P-1", "A")  # the only copy is on loan: it waits
        assert hold["status"] == "waiting"
        r = await client.get(f"/holds/{hold['hold_id']}", headers=ADMIN)
        assert r.json()["position"] == 1
        # returned at its owner B: the check-in sends it to the reader's pickup branch
        await post(client, branch_event("branch.checkin", "B", "X1"))
        view = await until(client, "X1", "in_transit")
        transfer = view["open_transfer"]
        assert (transfer["to_site"], transfer["reason"]) == ("A", "hold")
        delivered = cloud_event("logistics.shipment_delivered", "X1", {
            "shipment_id": "S-1", "transfer_id": transfer["transfer_id"], "barcode": "X1",
            "site": "A"}, source="branchline/logistics")
        await produce(settings, "logistics.shipments", [delivered])
        await until(client, "X1", "on_hold_shelf", "A")
        r = await client.get("/sites/A/hold-shelf", headers=token("desk", site="A"))
        [on_shelf] = r.json()
        assert on_shelf["barcode"] == "X1" and on_shelf["patron"] == "P-1"
        assert on_shelf["expires_on"] is not None
        # the reader collects it
        await post(client, branch_event("branch.checkout", "A", "X1", patron="P-1"))
        await until(client, "X1", "on_loan", "A")
        r = await client.get(f"/holds/{hold['hold_id']}", headers=ADMIN)
        assert r.json()["status"] == "fulfilled"
        records = await read_topic(settings, "circulation.holds", at_least=3, settle=1.0)
        assert [e["type"] for e in events_of(records) if e["subject"] == hold["hold_id"]] == [
            "circulation.hold_placed", "circulation.hold_ready", "circulation.hold_closed"]
        checked_in = events_of(await read_topic(settings, "circulation.loans", at_least=1,
                                                settle=1.0), "circulation.item_checked_in")
        assert checked_in[-1]["data"]["disposition"] == "transfer"


async def test_a_hold_is_filled_from_the_pickup_shelf_else_the_cheapest_copy(infra: Infra,
                                                                           ) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        # C is nearest to A as the crow flies, but B shares A's hub
        await setup(client, settings, [("Y-B", "B"), ("Y-C", "C"), ("Y-A", "A")])
        first = await place(client, "P-1", "A")
        assert (first["status"], first["barcode"]) == ("ready", "Y-A")  # on A's own shelf
        second = await place(client, "P-2", "A")
        assert (second["status"], second["barcode"]) == ("in_transit", "Y-B")  # same hub
        view = await item(client, "Y-B")
        assert view["open_transfer"]["reason"] == "hold"
        third = await place(client, "P-3", "A")
        assert third["barcode"] == "Y-C"
        fourth = await place(client, "P-4", "A")
        assert (fourth["status"], fourth["barcode"]) == ("waiting", None)
        # the same hold id again is the same hold
        r = await client.post("/holds", json={"patron": "P-4", "pickup_branch": "A",
                                              "bib_id": "bib-1", "hold_id": "mine-1"},
                              headers=ADMIN)
        again = await client.post("/holds", json={"patron": "P-4", "pickup_branch": "A",
                                                  "bib_id": "bib-1", "hold_id": "mine-1"},
                                  headers=ADMIN)
        assert again.json()["hold_id"] == r.json()["hold_id"] == "mine-1"


async def test_cancel_and_expiry_send_the_copy_to_the_next_reader_or_home(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await setup(client, settings, [("Z1", "B")])
        first = await place(client, "P-1", "A")
        assert first["barcode"] == "Z1" and first["status"] == "in_transit"
        second = await place(client, "P-2", "C")
        # cancelled under transfer: re-routed to the next reader's pickup branch
        r = await client.delete(f"/holds/{first['hold_id']}", headers=token("desk", site="A"))
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        view = await item(client, "Z1")
        assert (view["open_transfer"]["to_site"], view["open_transfer"]["reason"]) == (
            "C", "hold")
        r = await client.get(f"/holds/{second['hold_id']}", headers=ADMIN)
        assert r.json()["status"] == "in_transit"
        # it arrives, waits on C's shelf, nobody comes: it expires and goes home
        delivered = cloud_event("logistics.shipment_delivered", "Z1", {
            "shipment_id": "S-2", "transfer_id": view["open_transfer"]["transfer_id"],
            "barcode": "Z1", "site": "C"}, source="branchline/logistics")
        await produce(settings, "logistics.shipments", [delivered])
        await until(client, "Z1", "on_hold_shelf", "C")
        r = await client.get(f"/holds/{second['hold_id']}", headers=ADMIN)
        expires = date.fromisoformat(r.json()["expires_on"])
        async with client.service.uow() as uow:
            assert await expire_holds(uow, expires) == 0  # still its last day
        async with client.service.uow() as uow:
            assert await expire_holds(uow, expires + timedelta(days=1)) == 1
        view = await item(client, "Z1")
        assert (view["status"], view["open_transfer"]["to_site"]) == ("in_transit", "B")
        r = await client.get(f"/holds/{second['hold_id']}", headers=ADMIN)
        assert r.json()["status"] == "expired"


async def test_holds_before_the_first_copy_and_a_new_copy_filling_one(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await produce(settings, "network.sites", [site_event(c) for c in SITES])

        async def refused_for_the_title() -> bool:  # once the sites are known
            r = await client.post("/holds", json={"patron": "P-1", "pickup_branch": "A",
                                                  "isbn": "7-02-000220-X"}, headers=ADMIN)
            return r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "isbn"]

        await eventually(refused_for_the_title, what="a title nobody has: refused")
        opened = cloud_event("acquisition.order_opened", "O-1", {
            "order_id": "O-1", "vendor_id": "V", "fund_code": "F", "currency": "CNY",
            "lines": [{"line_id": "L-1", "isbn": "978-7-02-000220-7", "title": "Wei Cheng",
                       "unit_price": "39.00", "quantity": 2,
                       "distribution": [{"branch": "B", "copies": 2}]}]},
            source="branchline/acquisition")
        await produce(settings, "acquisition.orders", [opened])

        async def placed() -> Any:
            r = await client.post("/holds", json={"patron": "P-1", "pickup_branch": "A",
                                                  "isbn": "7-02-000220-X", "hold_id": "H-1"},
                                  headers=ADMIN)
            return r.status_code == 201 and r.json()

        hold = await eventually(placed, what="a hold on a title on order")
        assert hold["status"] == "waiting" and hold["isbn"] == ISBN
        # the first copy catalogued goes to the reader, not home
        await produce(settings, "cataloging.items", [copy("N1", "B")])
        view = await until(client, "N1", "in_transit")
        assert (view["open_transfer"]["to_site"], view["open_transfer"]["reason"]) == (
            "A", "hold")


async def test_limits_and_refusals(infra: Infra) -> None:
    settings = await new_env(infra, holds_per_patron=2)
    async with running_service(SPEC, settings) as client:
        await setup(client, settings, [("L1", "B")])
        await place(client, "P-1", "A")
        await place(client, "P-1", "B")
        r = await client.post("/holds", json={"patron": "P-1", "pickup_branch": "A",
                                              "bib_id": "bib-1"}, headers=ADMIN)
        assert r.status_code == 409 and "limit is 2" in r.json()["detail"]
        r = await client.post("/holds", json={"patron": "P-2", "pickup_branch": "NOWHERE",
                                              "bib_id": "bib-1"}, headers=ADMIN)
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "pickup_branch"]
        r = await client.post("/holds", json={"patron": "P-2", "pickup_branch": "A"},
                              headers=ADMIN)
        assert r.status_code == 422
        r = await client.post("/holds", json={"patron": "P-2", "pickup_branch": "A",
                                              "bib_id": "bib-1"},
                              headers=token("desk", site="B"))
        assert r.status_code == 403
        # the same refusals from a branch system's event become anomalies, not crashes
        request = branch_event("branch.hold_requested", "A", "x", patron="P-1",
                               bib_id="bib-1")
        request["subject"] = "P-1"
        del request["data"]["barcode"]
        await post(client, request)
        checkin = branch_event("branch.checkin", "A", "L9")  # a later fact on the stream
        await post(client, checkin)
        await until(client, "L9", "available")
        records = await read_topic(settings, "circulation.holds", at_least=2, settle=1.0)
        assert len(events_of(records, "circulation.hold_placed")) == 2
        assert datetime.now(UTC)  # the refused request placed nothing


async def test_copies_cancelled_on_order_no_longer_count_for_their_title(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await produce(settings, "network.sites", [site_event(c) for c in SITES])
        line = {"line_id": "L-9", "isbn": "9787544253994", "title": "Shadow",
                "unit_price": "45.00", "quantity": 3,
                "distribution": [{"branch": "B", "copies": 3}]}
        opened = cloud_event("acquisition.order_opened", "O-9", {
            "order_id": "O-9", "vendor_id": "V", "fund_code": "F", "currency": "CNY",
            "lines": [line]}, source="branchline/acquisition")
        await produce(settings, "acquisition.orders", [opened, opened])  # twice: counted once

        async def hold_accepted() -> Any:
            r = await client.post("/holds", json={"patron": "P-9", "pickup_branch": "A",
                                                  "isbn": "9787544253994"}, headers=ADMIN)
            return r.status_code == 201 and r.json()

        hold = await eventually(hold_accepted, what="a hold on copies on order")
        await client.delete(f"/holds/{hold['hold_id']}", headers=token("desk", site="A"))
        for copies in (2, 1):
            await produce(settings, "acquisition.orders", [cloud_event(
                "acquisition.order_cancelled", "O-9", {
                    "order_id": "O-9", "line_ids": ["L-9"], "reason": "out of print",
                    "lines": [{"line_id": "L-9", "copies": copies}]},
                source="branchline/acquisition")])

        async def refused() -> bool:
            r = await client.post("/holds", json={"patron": "P-8", "pickup_branch": "A",
                                                  "isbn": "9787544253994"}, headers=ADMIN)
            return r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "isbn"]

        await eventually(refused, what="every copy on order cancelled: no title to wait for")
