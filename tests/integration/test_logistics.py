"""Logistics against the real broker and Postgres: the network, shipments, driver scans."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import pytest

from services.logistics.models import Route, Shipment
from services.logistics.network import DEMO_NETWORK, load_network_file
from services.logistics.spec import SPEC
from tests.support import (
    Infra,
    ServiceClient,
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

CIRCULATION = "branchline/circulation"
DRIVER = token("driver", driver="D-07")
ADMIN = token("admin")


def demo_network() -> dict[str, Any]:
    return json.loads(DEMO_NETWORK.read_text())


def transfer_requested(transfer_id: str, barcode: str, from_site: str, to_site: str,
                       event_id: str | None = None) -> dict[str, Any]:
    return cloud_event(
        "circulation.transfer_requested", barcode,
        {"transfer_id": transfer_id, "barcode": barcode, "from_site": from_site,
         "to_site": to_site, "reason": "return_home",
         "requested_at": datetime.now(UTC).isoformat()},
        source=CIRCULATION, event_id=event_id,
    )


ROUTE = "R-2026-03-02-1"


def scan(scan_id: str, kind: str, site: str, barcodes: list[str], **extra: Any) -> dict:
    return {"scan_id": scan_id, "route_id": ROUTE, "site": site, "kind": kind,
            "barcodes": barcodes, "time": datetime.now(UTC).isoformat(), **extra}


async def plant_route(client: ServiceClient, sites: list[str], *, route_id: str = ROUTE,
                      driver: str = "D-07", day: date = date(2026, 3, 2)) -> None:
    """A planned route as a plan would write it, so scans have a route to belong to."""
    now = datetime.now(UTC).isoformat()
    async with client.service.uow() as uow:
        uow.repo(Route).add(Route(
            route_id=route_id, date=day, hub="JX-HUB", vehicle="VAN-T", driver=driver,
            plan_id="P-test", stops=[{"seq": n, "site": site, "part": 1, "arrival": now,
                                      "departure": now, "deliveries": 0, "pickups": 0,
                                      "status": "pending"}
                                     for n, site in enumerate(sites, start=1)]))


async def shipments_of(client: Any, barcode: str) -> list[dict[str, Any]]:
    r = await client.get("/shipments", params={"barcode": barcode}, headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()


async def wait_for_shipment(client: Any, barcode: str) -> dict[str, Any]:
    async def created():
        return await shipments_of(client, barcode)

    return (await eventually(created, what=f"shipment of {barcode}"))[0]


async def test_demo_network_loads_and_announces_every_site(infra: Infra) -> None:
    settings = await new_env(infra)
    document = demo_network()
    codes = {s["code"] for s in document["sites"]}
    async with running_service(SPEC, settings) as client:
        r = await client.post("/network", json=document, headers=token("dispatcher"))
        assert r.status_code == 200, r.text
        assert r.json() == {"sites": len(codes), "vehicles": len(document["vehicles"]),
                            "drivers": len(document["drivers"])}

        records = await read_topic(settings, "network.sites", at_least=len(codes), settle=2.0)
        upserted = events_of(records, "network.site_upserted")
        assert sorted(e["subject"] for e in upserted) == sorted(codes)
        assert all(r.key.decode() == json.loads(r.value)["subject"] for r in records)
        hub = next(e["data"] for e in upserted if e["subject"] == "JX-HUB")
        assert hub["kind"] == "hub" and hub["hub"] == "JX-HUB"

        r = await client.get("/sites", headers=token("desk", site="JX-HN-01"))
        assert r.status_code == 200
        assert [s["code"] for s in r.json()] == sorted(codes)
        r = await client.get("/sites/JX-HN-01", headers=DRIVER)
        assert r.status_code == 200
        assert r.json()["kind"] == "county" and r.json()["opening_hours"]["mon"] == []
        assert (await client.get("/sites/JX-NOWHERE", headers=ADMIN)).status_code == 404

        # a desk may look, not load
        r = await client.post("/network", json=document, headers=token("desk", site="JX-HN-01"))
        assert r.status_code == 403
        # one bad site rejects the whole file, naming the site and the field
        bad = demo_network()
        bad["sites"][3]["opening_hours"]["tue"] = [["17:00", "09:00"]]
        bad["sites"][4]["hub"] = "JX-NOWHERE"
        r = await client.post("/network", json=bad, headers=ADMIN)
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert {(d["site"], d["field"]) for d in detail} == {
            (bad["sites"][3]["code"], "opening_hours.tue[0]"),
            (bad["sites"][4]["code"], "hub"),
        }
        assert ["body", "sites", 3, "opening_hours", "tue", 0] in [d["loc"] for d in detail]


async def test_network_file_loads_without_the_http_app(infra: Infra) -> None:
    settings = await new_env(infra)
    count = (await load_network_file(DEMO_NETWORK, settings)).sites
    assert count == len(demo_network()["sites"])
    # the events wait in the outbox until the service's relay runs
    async with running_service(SPEC, settings) as client:
        records = await read_topic(settings, "network.sites", at_least=count, settle=1.0)
        assert len(events_of(records, "network.site_upserted")) == count
        assert len((await client.get("/sites", headers=ADMIN)).json()) == count
    # loading again upserts, it does not duplicate
    assert (await load_network_file(DEMO_NETWORK, settings)).sites == count


async def test_a_transfer_makes_exactly_one_shipment(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        first = transfer_requested("T-1", "B100", "JX-HN-01", "JX-PH-01")
        again = transfer_requested("T-1", "B100", "JX-HN-01", "JX-PH-01")  # new event id
        await produce(settings, "circulation.transfers", [first, first])
        await produce(settings, "circulation.transfers", [again])
        # a later, unrelated transfer shows the three above were all consumed
        await produce(settings, "circulation.transfers",
                      [transfer_requested("T-2", "B100", "JX-PH-01", "JX-HN-01")])

        async def both():
            found = await shipments_of(client, "B100")
            return len(found) == 2 and found

        found = await eventually(both, what="shipments of T-1 and T-2")
        assert [s["transfer_id"] for s in found] == ["T-2", "T-1"]  # newest first
        assert all(s["status"] == "created" for s in found)

        records = await read_topic(settings, "logistics.shipments", at_least=2, settle=2.0)
        created = events_of(records, "logistics.shipment_created")
        assert sorted(e["data"]["transfer_id"] for e in created) == ["T-1", "T-2"]
        t1 = next(e for e in created if e["data"]["transfer_id"] == "T-1")
        assert t1["subject"] == "B100"
        assert t1["causationid"] == first["id"]
        assert t1["data"] == {"shipment_id": found[1]["shipment_id"], "transfer_id": "T-1",
                              "barcode": "B100", "from_site": "JX-HN-01", "to_site": "JX-PH-01"}
        r = await client.get(f"/shipments/{found[1]['shipment_id']}", headers=DRIVER)
        assert r.status_code == 200 and r.json()["transfer_id"] == "T-1"
        assert (await client.get("/shipments/nope", headers=ADMIN)).status_code == 404


async def test_scans_pick_up_pass_the_hub_and_deliver(infra: Infra) -> None:
    settings = await new_env(infra)
    await load_network_file(DEMO_NETWORK, settings)
    async with running_service(SPEC, settings) as client:
        await produce(settings, "circulation.transfers", [
            transfer_requested("T-10", "B200", "JX-HN-01", "JX-PH-01"),
            transfer_requested("T-11", "B201", "JX-HN-01", "JX-HUB"),
        ])
        shipment = await wait_for_shipment(client, "B200")
        await wait_for_shipment(client, "B201")
        await plant_route(client, ["JX-HN-01", "JX-PH-01"])

        load = scan("S-1", "load", "JX-HN-01", ["B200", "B201", "B999"], crate_id="C-5")
        r = await client.post("/scans", json=load, headers=DRIVER)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["duplicate"] is False
        assert [(x["barcode"], x["outcome"]) for x in body["results"]] == [
            ("B200", "picked_up"), ("B201", "picked_up"), ("B999", "no_open_shipment")]

        # the same scan sent again is accepted and changes nothing
        r = await client.post("/scans", json=load, headers=DRIVER)
        assert r.status_code == 200
        assert r.json()["duplicate"] is True
        assert r.json()["results"] == body["results"]

        # unloading the crate at the hub: one item arrives there, the other is delivered
        r = await client.post("/scans", json=scan("S-2", "unload", "JX-HUB", [], crate_id="C-5"),
                              headers=DRIVER)
        assert [(x["barcode"], x["outcome"]) for x in r.json()["results"]] == [
            ("B200", "arrived"), ("B201", "delivered")]
        r = await client.post("/scans", json=scan("S-3", "unload", "JX-HUB", ["B200"]),
                              headers=DRIVER)
        assert r.json()["results"][0]["outcome"].startswith("ignored: ")

        r = await client.post("/scans", json=scan("S-4", "load", "JX-HUB", ["B200"]),
                              headers=token("dispatcher"))
        assert r.json()["results"][0]["outcome"] == "picked_up"
        r = await client.post("/scans", json=scan("S-5", "unload", "JX-PH-01", ["B200"]),
                              headers=DRIVER)
        assert r.json()["results"][0]["outcome"] == "delivered"
        r = await client.post("/scans", json=scan("S-5", "unload", "JX-PH-01", ["B200"]),
                              headers=DRIVER)
        assert r.json()["duplicate"] is True

        [done] = await shipments_of(client, "B200")
        assert done["status"] == "delivered" and done["last_site"] == "JX-PH-01"
        assert done["delivered_at"] is not None and done["picked_up_at"] is not None

        records = await read_topic(settings, "logistics.shipments", at_least=8, settle=2.0)
        moves = [(e["type"].removeprefix("logistics.shipment_"), e["data"]["site"])
                 for e in events_of(records) if e["subject"] == "B200"
                 and e["type"] != "logistics.shipment_created"]
        assert moves == [("picked_up", "JX-HN-01"), ("arrived", "JX-HUB"),
                         ("picked_up", "JX-HUB"), ("delivered", "JX-PH-01")]
        picked = events_of(records, "logistics.shipment_picked_up")
        first = next(e for e in picked if e["subject"] == "B200")
        assert first["data"] == {"shipment_id": shipment["shipment_id"], "transfer_id": "T-10",
                                 "barcode": "B200", "site": "JX-HN-01",
                                 "route_id": "R-2026-03-02-1", "crate_id": "C-5"}
        b201 = [e["type"] for e in events_of(records) if e["subject"] == "B201"]
        assert b201 == ["logistics.shipment_created", "logistics.shipment_picked_up",
                        "logistics.shipment_delivered"]


async def test_a_cancelled_transfer_cancels_its_shipment(infra: Infra) -> None:
    settings = await new_env(infra)
    await load_network_file(DEMO_NETWORK, settings)
    async with running_service(SPEC, settings) as client:
        await produce(settings, "circulation.transfers",
                      [transfer_requested("T-20", "B300", "JX-TX-01", "JX-JS-01")])
        shipment = await wait_for_shipment(client, "B300")
        cancel = cloud_event("circulation.transfer_cancelled", "B300",
                             {"transfer_id": "T-20", "barcode": "B300",
                              "reason": "checked out at JX-TX-01"}, source=CIRCULATION)
        await produce(settings, "circulation.transfers", [cancel, cancel])

        async def cancelled():
            [s] = await shipments_of(client, "B300")
            return s["status"] == "cancelled" and s

        await eventually(cancelled, what="shipment cancelled")
        await plant_route(client, ["JX-TX-01"])
        records = await read_topic(settings, "logistics.shipments", at_least=2, settle=2.0)
        [event] = events_of(records, "logistics.shipment_cancelled")
        assert event["data"] == {"shipment_id": shipment["shipment_id"], "transfer_id": "T-20",
                                 "barcode": "B300"}
        assert event["causationid"] == cancel["id"]

        r = await client.post("/scans", json=scan("S-20", "load", "JX-TX-01", ["B300"]),
                              headers=DRIVER)
        assert r.json()["results"] == [{"barcode": "B300", "outcome": "no_open_shipment",
                                        "shipment_id": None}]


async def test_scan_input_and_roles(infra: Infra) -> None:
    settings = await new_env(infra)
    await load_network_file(DEMO_NETWORK, settings)
    async with running_service(SPEC, settings) as client:
        await plant_route(client, ["JX-HY-02"])
        good = scan("S-30", "arrive", "JX-HY-02", [])
        r = await client.post("/scans", json=good, headers=token("desk", site="JX-HY-02"))
        assert r.status_code == 403
        r = await client.post("/scans", json=good)
        assert r.status_code == 401

        bad = {**good, "kind": "teleport"}
        del bad["time"]
        r = await client.post("/scans", json=bad, headers=DRIVER)
        assert r.status_code == 422
        locs = [e["loc"] for e in r.json()["detail"]]
        assert ["body", "kind"] in locs and ["body", "time"] in locs
        r = await client.post("/scans", json={**good, "time": "2026-03-02T09:00:00"},
                              headers=DRIVER)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "time"]
        r = await client.post("/scans", json={**good, "site": "JX-NOWHERE"}, headers=DRIVER)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "site"]

        r = await client.post("/scans", json=good, headers=DRIVER)
        assert r.status_code == 200, r.text
        assert r.json() == {"scan_id": "S-30", "duplicate": False, "results": [], "crate": None,
                            "stop": {"seq": 1, "site": "JX-HY-02", "status": "arrived"}}
        # another driver's token may not scan on this route; nor at a site not on it
        r = await client.post("/scans", json={**good, "scan_id": "S-31"},
                              headers=token("driver", driver="D-08"))
        assert r.status_code == 403, r.text
        r = await client.post("/scans", json={**good, "scan_id": "S-32", "site": "JX-HN-01"},
                              headers=DRIVER)
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "not_on_route"
        r = await client.post("/scans", json={**good, "scan_id": "S-33", "route_id": "R-X"},
                              headers=DRIVER)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "route_id"]
        r = await client.get("/shipments", headers=DRIVER)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "barcode"]


async def test_checkin_at_destination_delivers_the_open_shipment(infra: Infra) -> None:
    """Circulation completed the transfer at the shelf before any unload scan."""
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await produce(settings, "circulation.transfers",
                      [transfer_requested("TC-1", "BC-1", "JX-PH-01", "JX-HN-01")])
        shipment = await wait_for_shipment(client, "BC-1")
        completed = cloud_event(
            "circulation.transfer_completed", "BC-1",
            {"transfer_id": "TC-1", "barcode": "BC-1", "site": "JX-HN-01"}, source=CIRCULATION)
        await produce(settings, "circulation.transfers", [completed, completed])

        async def delivered():
            rows = await shipments_of(client, "BC-1")
            return rows[0]["status"] == "delivered" and rows[0]

        await eventually(delivered, what="shipment delivered by the check-in")
        records = await read_topic(settings, "logistics.shipments", at_least=2, settle=2.0)
        done = events_of(records, "logistics.shipment_delivered")
        assert len(done) == 1
        assert done[0]["data"]["shipment_id"] == shipment["shipment_id"]
        assert done[0]["data"]["site"] == "JX-HN-01"


async def test_report_counts_stops_and_deliveries_per_site(infra: Infra) -> None:
    """Routes by their `date`; deliveries by the library's day (Asia/Shanghai, UTC+8)."""
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        now = datetime.now(UTC)

        def route(route_id: str, day: date, status: str,
                  stops: list[tuple[str, str]]) -> Route:
            return Route(route_id=route_id, date=day, hub="JX-HUB", vehicle="VAN-T",
                         plan_id="P-test", status=status,
                         stops=[{"seq": n, "site": site, "part": 1, "arrival": now.isoformat(),
                                 "departure": now.isoformat(), "deliveries": 0, "pickups": 0,
                                 "status": stop_status}
                                for n, (site, stop_status) in enumerate(stops, start=1)])

        def shipment(n: int, to_site: str, delivered: str | None) -> Shipment:
            at = datetime.fromisoformat(delivered).replace(tzinfo=UTC) if delivered else None
            return Shipment(shipment_id=f"SH-{n}", transfer_id=f"T-{n}", barcode=f"B-{n}",
                            from_site="JX-HN-01", to_site=to_site, last_site=to_site,
                            status="delivered" if at else "created", created_at=now,
                            delivered_at=at)

        async with client.service.uow() as uow:
            for row in (
                route("R-1", date(2026, 3, 2), "completed", [
                    ("JX-HN-01", "served"), ("JX-PH-01", "served"), ("JX-HN-01", "unserved")]),
                route("R-2", date(2026, 3, 8), "planned", [("JX-PH-01", "pending")]),
                route("R-3", date(2026, 3, 5), "cancelled", [("JX-HN-01", "pending")]),
                route("R-4", date(2026, 3, 9), "completed", [("JX-HN-01", "served")]),
            ):
                uow.repo(Route).add(row)
            for row in (
                shipment(1, "JX-PH-01", "2026-03-02T16:00"),  # in: Mar 3 00:00 local
                shipment(2, "JX-PH-01", "2026-03-01T15:59"),  # out: Mar 1 23:59 local
                shipment(3, "JX-TX-01", "2026-03-08T15:00"),  # in: Mar 8 23:00 local
                shipment(4, "JX-TX-01", None),
            ):
                uow.repo(Shipment).add(row)

        period = {"from": "2026-03-02", "to": "2026-03-08"}
        r = await client.get("/report", headers=token("dispatcher"), params=period)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "from": "2026-03-02", "to": "2026-03-08",
            "sites": [
                {"site": "JX-HN-01", "stops_planned": 2, "stops_served": 1, "delivered": 0},
                {"site": "JX-PH-01", "stops_planned": 2, "stops_served": 1, "delivered": 1},
                {"site": "JX-TX-01", "stops_planned": 0, "stops_served": 0, "delivered": 1}],
            "network": {"stops_planned": 4, "stops_served": 2, "delivered": 2}}
        r = await client.get("/report", headers=ADMIN,
                             params={"from": "2026-03-09", "to": "2026-03-09"})
        assert r.json()["sites"] == [
            {"site": "JX-HN-01", "stops_planned": 1, "stops_served": 1, "delivered": 0}]
        assert (await client.get("/report", headers=DRIVER, params=period)).status_code == 403

        r = await client.get("/report", headers=ADMIN,
                             params={"from": "2026-03-08", "to": "2026-03-02"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "to"]
        r = await client.get("/report", headers=ADMIN,
                             params={"from": "2024-01-01", "to": "2025-01-01"})  # 367 days
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "to"]
        r = await client.get("/report", headers=ADMIN, params={"from": "2026-03-02",
                                                               "to": "March"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "to"]
