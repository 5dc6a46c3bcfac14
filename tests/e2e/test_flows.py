"""The two flows that define the system, across four service processes.

(a) purchase to shelf; (b) return anywhere; (c) a repeated branch fact; (d) circulation
SIGKILLed with 500 check-ins in flight: none lost, none doubled.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections import Counter
from datetime import UTC, datetime

import asyncpg
import pytest

from tests.e2e.conftest import E2E
from tests.support import (
    asyncpg_dsn,
    branch_event,
    cloud_event,
    events_of,
    eventually,
    item_cataloged,
    produce,
    read_topic,
)

pytestmark = pytest.mark.e2e

CENTRAL, HAINING, HAIYAN, PINGHU = "JX-CENTRAL", "JX-HN-01", "JX-HY-01", "JX-PH-01"


def now() -> str:
    return datetime.now(UTC).isoformat()


async def item(system: E2E, barcode: str) -> dict:
    r = await system.get("circulation", f"/items/{barcode}")
    return r.json() if r.status_code == 200 else {}


async def scan(system: E2E, site: str, kind: str, barcodes: list[str]) -> dict:
    r = await system.post(
        "logistics", "/scans",
        {"scan_id": str(uuid.uuid4()), "route_id": "R-TEST", "site": site, "kind": kind,
         "barcodes": barcodes, "time": now()},
        role="dispatcher",  # hub staff: scans outside a planned route
    )
    assert r.status_code in (200, 201), r.text
    return r.json()


async def shipment_for(system: E2E, barcode: str) -> dict:
    async def created():
        r = await system.get("logistics", f"/shipments?barcode={barcode}")
        body = r.json() if r.status_code == 200 else []
        open_ = [s for s in body if s["status"] == "created"]
        return open_[0] if open_ else None

    return await eventually(created, timeout=30, what=f"a shipment for {barcode}")



async def test_a_purchase_to_shelf(system: E2E) -> None:
    vendor, fund = f"V-{uuid.uuid4().hex[:6]}", f"F-{uuid.uuid4().hex[:6]}"
    assert (await system.post("acquisition", "/vendors", {"vendor_id": vendor, "name": "Xinhua"},
                              role="acquisitions")).status_code == 201
    assert (await system.post("acquisition", "/funds",
                              {"fund_code": fund, "name": "Adult fiction 2026",
                               "budget": "10000.00", "currency": "CNY"},
                              role="acquisitions")).status_code == 201
    r = await system.post("acquisition", "/orders", {
        "vendor_id": vendor, "fund_code": fund, "currency": "CNY",
        "lines": [{"isbn": "7-02-000220-8", "title": "Fortress Besieged", "author": "Qian Zhongshu",
                   "unit_price": "38.50", "quantity": 3,
                   "distribution": [{"branch": HAINING, "copies": 2},
                                    {"branch": HAIYAN, "copies": 1}]}],
    }, role="acquisitions")
    assert r.status_code == 201, r.text
    order_id = r.json()["order_id"]
    assert (await system.post("acquisition", f"/orders/{order_id}/open", {},
                              role="acquisitions")).status_code in (200, 201)
    order = (await system.get("acquisition", f"/orders/{order_id}", role="acquisitions")).json()
    line_id = order["lines"][0]["line_id"]
    r = await system.post("acquisition", f"/orders/{order_id}/receipts",
                          {"line_id": line_id, "quantity": 3}, role="acquisitions")
    assert r.status_code == 201, r.text
    copies = {c["copy_id"]: c["owning_branch"] for c in r.json()["copies"]}
    assert sorted(copies.values()) == [HAINING, HAINING, HAIYAN]

    records = await read_topic(system.settings, "cataloging.items", at_least=3, timeout=60,
                               where=lambda rec: b"item_cataloged" in rec.value
                               and any(c.encode() in rec.value for c in copies))
    items = {e["data"]["copy_id"]: e["data"] for e in events_of(records)}
    assert set(items) == set(copies)
    barcodes = {data["barcode"]: data["owning_branch"] for data in items.values()}
    assert len(barcodes) == 3

    for barcode, owner in barcodes.items():
        assert items_owner(items, barcode) == copies_owner(copies, items, barcode)
        shipment = await shipment_for(system, barcode)
        assert (shipment["from_site"], shipment["to_site"]) == (CENTRAL, owner)
        view = await item(system, barcode)
        assert view["status"] == "in_transit" and view["open_transfer"]["reason"] == "new_item"

    await scan(system, CENTRAL, "load", list(barcodes))
    for owner in {HAINING, HAIYAN}:
        await scan(system, owner, "unload", [b for b, o in barcodes.items() if o == owner])

    for barcode, owner in barcodes.items():
        async def shelved(barcode=barcode, owner=owner):
            view = await item(system, barcode)
            return view.get("status") == "available" and view.get("site") == owner and view

        view = await eventually(shelved, timeout=30, what=f"{barcode} available at {owner}")
        assert view["owning_branch"] == owner and view["open_transfer"] is None


def items_owner(items: dict, barcode: str) -> str:
    return next(d["owning_branch"] for d in items.values() if d["barcode"] == barcode)


def copies_owner(copies: dict, items: dict, barcode: str) -> str:
    return copies[next(c for c, d in items.items() if d["barcode"] == barcode)]


async def test_b_return_anywhere(system: E2E) -> None:
    barcode = f"E2E-B-{uuid.uuid4().hex[:6]}"
    await produce(system.settings, "cataloging.items", [item_cataloged(barcode, HAINING)])

    async def registered():
        return (await item(system, barcode)).get("status") == "available"

    await eventually(registered, what="item registered at its owner")
    desk_out = branch_event("branch.checkout", HAINING, barcode, patron="P-1")
    r = await system.post("circulation", "/branch-events", desk_out,
                          role="desk", site=HAINING)
    assert r.status_code == 202, r.text

    async def on_loan():
        view = await item(system, barcode)
        return view.get("status") == "on_loan" and view

    assert (await eventually(on_loan, what="on loan"))["loan"]["patron"] == "P-1"
    r = await system.post("circulation", "/branch-events",
                          branch_event("branch.checkin", PINGHU, barcode),
                          role="branch_system", site=PINGHU)
    assert r.status_code == 202, r.text
    shipment = await shipment_for(system, barcode)
    assert (shipment["from_site"], shipment["to_site"]) == (PINGHU, HAINING)
    view = await item(system, barcode)
    assert view["status"] == "in_transit" and view["loan"] is None
    assert view["open_transfer"]["reason"] == "return_home"

    await scan(system, PINGHU, "load", [barcode])
    await scan(system, HAINING, "unload", [barcode])

    async def home():
        view = await item(system, barcode)
        return view.get("status") == "available" and view.get("site") == HAINING

    await eventually(home, what="available at the owner")
    transfers = events_of(await read_topic(
        system.settings, "circulation.transfers", at_least=1,
        where=lambda rec: rec.key == barcode.encode()), "circulation.transfer_requested")
    assert len({t["id"] for t in transfers}) == 1


async def test_c_same_checkin_twice_makes_one_transfer(system: E2E) -> None:
    barcode = f"E2E-C-{uuid.uuid4().hex[:6]}"
    await produce(system.settings, "cataloging.items", [item_cataloged(barcode, HAINING)])

    async def registered():
        return (await item(system, barcode)).get("status") == "available"

    await eventually(registered, what="item registered")
    checkin = branch_event("branch.checkin", PINGHU, barcode)
    for _ in range(2):
        r = await system.post("circulation", "/branch-events", checkin,
                              role="branch_system", site=PINGHU)
        assert r.status_code == 202
    await shipment_for(system, barcode)
    records = await read_topic(system.settings, "circulation.transfers", at_least=1, settle=3.0,
                               where=lambda rec: rec.key == barcode.encode())
    assert len({t["id"] for t in events_of(records, "circulation.transfer_requested")}) == 1
    shipments = (await system.get("logistics", f"/shipments?barcode={barcode}")).json()
    assert len(shipments) == 1


async def _count(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def test_d_sigkill_circulation_mid_stream_loses_and_doubles_nothing(system: E2E) -> None:
    n = 500
    tag = uuid.uuid4().hex[:6]
    barcodes = [f"K{tag}{i:04d}" for i in range(n)]
    dsn = asyncpg_dsn(system.settings.database_url)
    await produce(system.settings, "cataloging.items",
                  [item_cataloged(b, HAINING) for b in barcodes])

    async def all_registered():
        return await _count(dsn, f"SELECT count(*) FROM circulation.item "
                                 f"WHERE barcode LIKE 'K{tag}%' AND status = 'available'") == n

    await eventually(all_registered, timeout=60, what="500 items registered")

    checkins = [branch_event("branch.checkin", PINGHU, b) for b in barcodes]
    proc = system.stack.procs["circulation"]
    killed_after = 0
    for start in range(0, n, 50):
        await produce(system.settings, "branch.events", checkins[start:start + 50])
        if start == 150:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed_after = start + 50
        await asyncio.sleep(0.05)
    assert killed_after == 200
    done_at_kill = await _count(
        dsn, f"SELECT count(*) FROM circulation.transfer WHERE barcode LIKE 'K{tag}%'")
    assert done_at_kill < n  # the kill really landed mid-stream

    system.stack.start_service("circulation")
    system.stack.wait_healthy(timeout=90)

    async def all_shipped():
        return await _count(dsn, f"SELECT count(*) FROM logistics.shipment "
                                 f"WHERE barcode LIKE 'K{tag}%'") >= n

    await eventually(all_shipped, timeout=120, what="a shipment per check-in")
    await asyncio.sleep(2)  # let any redelivery show itself
    per_barcode = await _rows(dsn, f"SELECT barcode, count(*) FROM circulation.transfer "
                                   f"WHERE barcode LIKE 'K{tag}%' GROUP BY barcode")
    assert len(per_barcode) == n and set(per_barcode.values()) == {1}
    shipped = await _rows(dsn, f"SELECT barcode, count(*) FROM logistics.shipment "
                               f"WHERE barcode LIKE 'K{tag}%' GROUP BY barcode")
    assert len(shipped) == n and set(shipped.values()) == {1}

    records = await read_topic(system.settings, "logistics.shipments", at_least=n, timeout=60,
                               where=lambda rec: rec.key.startswith(f"K{tag}".encode()))
    created = events_of(records, "logistics.shipment_created")
    ids_per_barcode = Counter()
    for barcode in {e["data"]["barcode"] for e in created}:
        ids_per_barcode[barcode] = len({e["data"]["shipment_id"] for e in created
                                        if e["data"]["barcode"] == barcode})
    assert len(ids_per_barcode) == n and set(ids_per_barcode.values()) == {1}


async def _rows(dsn: str, sql: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r[0]: r[1] for r in await conn.fetch(sql)}
    finally:
        await conn.close()


async def test_e_a_return_travels_by_planned_routes_and_driver_scans(system: E2E) -> None:
    """Return anywhere, the whole way: a check-in away from home → transfer → shipment →
    crate → plan → the driver's route and scans (online, then an offline batch sent late)
    → the item available at its owner."""
    barcode = f"E2E-E-{uuid.uuid4().hex[:6]}"
    await produce(system.settings, "cataloging.items", [item_cataloged(barcode, HAINING)])

    async def registered():
        return (await item(system, barcode)).get("status") == "available"

    await eventually(registered, what="item registered at its owner")
    r = await system.post("circulation", "/branch-events",
                          branch_event("branch.checkin", PINGHU, barcode),
                          role="branch_system", site=PINGHU)
    assert r.status_code == 202, r.text
    await shipment_for(system, barcode)

    async def crate_at(site: str) -> dict:
        role = {"role": "desk", "site": site} if site != "JX-HUB" else {"role": "dispatcher"}
        r = await system.post("logistics", f"/sites/{site}/pack", {}, **role)
        assert r.status_code == 200, r.text
        crates = (await system.get(
            "logistics", f"/shipments?barcode={barcode}")).json()[0]["crate_id"]
        body = (await system.get("logistics", f"/crates/{crates}")).json()
        assert barcode in body["barcodes"]
        return body

    async def route_of(day: str, site: str) -> tuple[str, str, dict]:
        r = await system.post("logistics", "/routes/plan", {"date": day, "seconds": 2},
                              role="dispatcher")
        assert r.status_code == 200, r.text
        [result] = r.json()
        for route in result["routes"]:
            view = (await system.get("logistics", f"/routes/{route['route_id']}",
                                     role="dispatcher")).json()
            if any(s["site"] == site for s in view["stops"]):
                return route["route_id"], route["driver"], view
        raise AssertionError(f"no route of {day} stops at {site}: {result}")

    # day 1: the Pinghu crate is collected and brought to the hub (online scans)
    crate = await crate_at(PINGHU)
    assert crate["destination"] == "JX-HUB"
    route_id, driver, _ = await route_of("2026-12-01", PINGHU)
    r = await system.get("logistics", f"/drivers/{driver}/route?date=2026-12-01",
                         role="driver", driver=driver)
    assert r.status_code == 200 and r.json()["route_id"] == route_id
    other = "D-02" if driver == "D-01" else "D-01"
    r = await system.get("logistics", f"/drivers/{driver}/route?date=2026-12-01",
                         role="driver", driver=other)
    assert r.status_code == 403

    def step(site: str, kind: str, at: str, crate_id: str | None = None,
             route: str = route_id) -> dict:
        return {"scan_id": str(uuid.uuid4()), "route_id": route, "site": site, "kind": kind,
                "crate_id": crate_id, "barcodes": [], "time": at}

    online = [step(PINGHU, "arrive", "2026-12-01T10:00:00+08:00"),
              step(PINGHU, "load", "2026-12-01T10:05:00+08:00", crate["crate_id"]),
              step(PINGHU, "depart", "2026-12-01T10:10:00+08:00"),
              step("JX-HUB", "unload", "2026-12-01T15:00:00+08:00", crate["crate_id"])]
    for s in online:
        r = await system.post("logistics", "/scans", s, role="driver", driver=driver)
        assert r.status_code == 200, r.text
    r = await system.post("logistics", "/scans", online[1], role="driver", driver=driver)
    assert r.json()["duplicate"] is True
    r = await system.post("logistics", "/scans", {**online[0], "scan_id": "x"},
                          role="driver", driver=other)
    assert r.status_code == 403
    [shipment] = (await system.get("logistics", f"/shipments?barcode={barcode}")).json()
    assert (shipment["status"], shipment["last_site"]) == ("arrived", "JX-HUB")

    # day 2: repacked at the hub for Haining, delivered; the van was offline all day
    crate = await crate_at("JX-HUB")
    assert crate["destination"] == HAINING
    route_id, driver, view = await route_of("2026-12-02", HAINING)
    assert any(c["crate_id"] == crate["crate_id"]
               for s in view["stops"] if s["site"] == HAINING for c in s["drop"])
    batch = [step(HAINING, "depart", "2026-12-02T11:10:00+08:00", route=route_id),
             step(HAINING, "unload", "2026-12-02T11:05:00+08:00", crate["crate_id"],
                  route=route_id),
             step("JX-HUB", "load", "2026-12-02T07:30:00+08:00", crate["crate_id"],
                  route=route_id),
             step(HAINING, "arrive", "2026-12-02T11:00:00+08:00", route=route_id)]
    r = await system.post("logistics", "/scans/batch", {"scans": batch},
                          role="driver", driver=driver)
    assert r.status_code == 200, r.text
    assert (r.json()["applied"], r.json()["refused"]) == (4, 0)
    r = await system.post("logistics", "/scans/batch", {"scans": batch},
                          role="driver", driver=driver)
    assert r.json()["duplicates"] == 4

    async def home():
        view = await item(system, barcode)
        return view.get("status") == "available" and view.get("site") == HAINING and view

    view = await eventually(home, what="available at the owner after the route")
    assert view["open_transfer"] is None
    delivered = events_of(await read_topic(
        system.settings, "logistics.shipments", at_least=1,
        where=lambda rec: rec.key == barcode.encode()), "logistics.shipment_delivered")
    assert [e["data"]["site"] for e in delivered] == [HAINING]


async def test_f_a_hold_for_a_title_held_only_elsewhere(system: E2E) -> None:
    """A reader at Pinghu asks for a title held only at Haining → the copy is checked in
    at Haining → transfer → shipment → crates and routes → delivered → the hold shelf at
    Pinghu → checked out there by that reader."""
    barcode, bib, reader = (f"E2E-F-{uuid.uuid4().hex[:6]}", f"bib-{uuid.uuid4().hex[:8]}",
                            f"P-{uuid.uuid4().hex[:6]}")
    cataloged = item_cataloged(barcode, HAINING)
    cataloged["data"]["bib_id"] = bib
    await produce(system.settings, "cataloging.items", [cataloged])

    async def registered():
        return (await item(system, barcode)).get("status") == "available"

    await eventually(registered, what="the only copy at Haining")
    r = await system.post("circulation", "/branch-events",
                          branch_event("branch.checkout", HAINING, barcode, patron="P-other"),
                          role="desk", site=HAINING)
    assert r.status_code == 202, r.text

    async def on_loan():
        return (await item(system, barcode)).get("status") == "on_loan"

    await eventually(on_loan, what="the copy on loan at Haining")
    request = cloud_event("branch.hold_requested", reader,
                          {"branch": PINGHU, "patron": reader, "bib_id": bib,
                           "hold_id": f"H-{reader}"}, source=f"branch/{PINGHU}")
    r = await system.post("circulation", "/branch-events", request, role="desk", site=PINGHU)
    assert r.status_code == 202, r.text
    hold_id = f"H-{reader}"

    async def waiting():
        r = await system.get("circulation", f"/holds/{hold_id}")
        return r.status_code == 200 and r.json()["status"] == "waiting" and r.json()

    assert (await eventually(waiting, what="the hold waiting"))["position"] == 1
    r = await system.post("circulation", "/branch-events",
                          branch_event("branch.checkin", HAINING, barcode),
                          role="branch_system", site=HAINING)
    assert r.status_code == 202, r.text

    async def sent_to_the_reader():
        view = await item(system, barcode)
        transfer = view.get("open_transfer") or {}
        return transfer.get("reason") == "hold" and transfer.get("to_site") == PINGHU

    await eventually(sent_to_the_reader, what="a transfer to the pickup branch")
    await shipment_for(system, barcode)

    async def drive(day: str, origin: str, destination: str) -> None:
        """Pack at the origin, plan the day, and drive the crate from origin to
        destination on the route that visits the stop (the hub is one end)."""
        role = {"role": "desk", "site": origin} if origin != "JX-HUB" else {
            "role": "dispatcher"}
        r = await system.post("logistics", f"/sites/{origin}/pack", {}, **role)
        assert r.status_code == 200, r.text
        [shipment] = [s for s in (await system.get(
            "logistics", f"/shipments?barcode={barcode}")).json() if s["status"] in (
            "created", "arrived")]
        crate = shipment["crate_id"]
        r = await system.post("logistics", "/routes/plan", {"date": day, "seconds": 2},
                              role="dispatcher")
        assert r.status_code == 200, r.text
        stop = destination if origin == "JX-HUB" else origin
        for route in r.json()[0]["routes"]:
            view = (await system.get("logistics", f"/routes/{route['route_id']}")).json()
            if any(s["site"] == stop for s in view["stops"]):
                break
        else:
            raise AssertionError(f"no route of {day} stops at {stop}")
        for n, (site, kind) in enumerate([(origin, "load"), (destination, "unload")]):
            r = await system.post("logistics", "/scans", {
                "scan_id": str(uuid.uuid4()), "route_id": route["route_id"], "site": site,
                "kind": kind, "crate_id": crate, "barcodes": [],
                "time": f"{day}T{10 + n}:00:00+08:00"}, role="driver", driver=route["driver"])
            assert r.status_code == 200, r.text

    await drive("2026-12-03", HAINING, "JX-HUB")
    await drive("2026-12-04", "JX-HUB", PINGHU)

    async def on_the_hold_shelf():
        view = await item(system, barcode)
        return view.get("status") == "on_hold_shelf" and view.get("site") == PINGHU

    await eventually(on_the_hold_shelf, what="the copy on Pinghu's hold shelf")
    shelf = (await system.get("circulation", f"/sites/{PINGHU}/hold-shelf",
                              role="desk", site=PINGHU)).json()
    assert any(h["hold_id"] == hold_id and h["patron"] == reader for h in shelf)
    r = await system.post("circulation", "/branch-events",
                          branch_event("branch.checkout", PINGHU, barcode, patron=reader),
                          role="desk", site=PINGHU)
    assert r.status_code == 202, r.text

    async def collected():
        r = await system.get("circulation", f"/holds/{hold_id}")
        return r.json()["status"] == "fulfilled"

    await eventually(collected, what="the hold fulfilled")
    holds = events_of(await read_topic(system.settings, "circulation.holds", at_least=3,
                                       where=lambda rec: rec.key == hold_id.encode()))
    assert [e["type"] for e in holds] == ["circulation.hold_placed", "circulation.hold_ready",
                                          "circulation.hold_closed"]


async def test_g_two_branches_check_out_one_item_in_the_same_second(system: E2E) -> None:
    barcode = f"E2E-G-{uuid.uuid4().hex[:6]}"
    await produce(system.settings, "cataloging.items", [item_cataloged(barcode, HAINING)])

    async def registered():
        return (await item(system, barcode)).get("status") == "available"

    await eventually(registered, what="item registered")
    same_second = datetime.now(UTC).replace(microsecond=0).isoformat()
    outs = []
    for branch, patron in ((HAINING, "P-HN"), (PINGHU, "P-PH")):
        event = branch_event("branch.checkout", branch, barcode, patron=patron)
        event["time"] = same_second
        outs.append(system.post("circulation", "/branch-events", event,
                                role="branch_system", site=branch))
    answers = await asyncio.gather(*outs)
    assert [a.status_code for a in answers] == [202, 202]

    async def one_loan_one_anomaly():
        view = await item(system, barcode)
        anomalies = [a for a in (await system.get(
            "circulation", "/anomalies?limit=1000")).json() if a["barcode"] == barcode]
        return view.get("status") == "on_loan" and len(anomalies) == 1 and (view, anomalies)

    view, [anomaly] = await eventually(one_loan_one_anomaly, what="one loan, one anomaly")
    assert anomaly["kind"] == "checkout_while_on_loan"
    dsn = asyncpg_dsn(system.settings.db_url_for("circulation"))
    open_loans = await _count(dsn, "SELECT count(*) FROM circulation.loan WHERE barcode = "
                              f"'{barcode}' AND returned_at IS NULL")
    assert open_loans == 1 and view["loan"]["branch"] in (HAINING, PINGHU)
