"""Circulation against the real broker and Postgres: return-anywhere and the item view."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import col, select

from services.circulation.handlers import announce_late_transfers
from services.circulation.models import Anomaly, Loan
from services.circulation.spec import SPEC
from tests.support import (
    Infra,
    branch_event,
    cloud_event,
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



async def test_checkin_elsewhere_requests_one_transfer_home(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await produce(settings, "cataloging.items", [item_cataloged("B1", "JX-HN-01", "JX-HN-01")])

        async def registered():
            r = await client.get("/items/B1", headers=token("admin"))
            return r.status_code == 200 and r.json()

        item = await eventually(registered, what="item registered")
        assert item["status"] == "available" and item["site"] == "JX-HN-01"

        checkin = branch_event("branch.checkin", "JX-HY-02", "B1")
        r = await client.post("/branch-events", json=checkin,
                              headers=token("branch_system", site="JX-HY-02"))
        assert r.status_code == 202, r.text

        async def in_transit():
            body = (await client.get("/items/B1", headers=token("admin"))).json()
            return body["status"] == "in_transit" and body

        item = await eventually(in_transit, what="transfer home")
        assert item["open_transfer"]["to_site"] == "JX-HN-01"
        assert item["open_transfer"]["from_site"] == "JX-HY-02"
        assert item["open_transfer"]["reason"] == "return_home"

        # the same fact delivered again changes nothing
        await produce(settings, "branch.events", [checkin])
        records = await read_topic(settings, "circulation.transfers", at_least=1, settle=3.0)
        requested = events_of(records, "circulation.transfer_requested")
        assert len(requested) == 1
        assert requested[0]["data"]["barcode"] == "B1"
        assert requested[0]["causationid"] == checkin["id"]

        health = await client.get("/health")
        assert health.status_code == 200
        assert health.json()["database"] == "ok" and health.json()["broker"] == "ok"
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert 'branchline_events_consumed_total{service="circulation",type="branch.checkin"}' \
            in metrics.text
        assert 'branchline_events_duplicate_total{service="circulation",type="branch.checkin"}' \
            in metrics.text


async def test_branch_token_speaks_only_for_its_site(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        event = branch_event("branch.checkin", "JX-HY-02", "B2")
        r = await client.post("/branch-events", json=event,
                              headers=token("branch_system", site="JX-HN-01"))
        assert r.status_code == 403
        bad = branch_event("branch.checkin", "JX-HY-02", "B2")
        del bad["data"]["barcode"]
        r = await client.post("/branch-events", json=[bad],
                              headers=token("branch_system", site="JX-HY-02"))
        assert r.status_code == 422
        assert ["body", 0, "data", "barcode"] in [e["loc"] for e in r.json()["detail"]]
        r = await client.post("/branch-events", json=event)
        assert r.status_code == 401


async def test_checkin_at_destination_completes_the_transfer(infra: Infra) -> None:
    from sqlalchemy import func, select

    from services.circulation.models import Anomaly

    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await produce(settings, "cataloging.items",
                      [item_cataloged("N1", "JX-HN-01", "JX-CENTRAL")])

        async def shipped():
            body = (await client.get("/items/N1", headers=token("admin"))).json()
            return body.get("status") == "in_transit" and body

        item = await eventually(shipped, what="new item sent to its owner")
        transfer_id = item["open_transfer"]["transfer_id"]
        assert item["open_transfer"]["reason"] == "new_item"

        r = await client.post("/branch-events",
                              json=branch_event("branch.checkin", "JX-HN-01", "N1"),
                              headers=token("desk", site="JX-HN-01"))
        assert r.status_code == 202

        async def shelved():
            body = (await client.get("/items/N1", headers=token("admin"))).json()
            return body["status"] == "available" and body

        item = await eventually(shelved, what="checked in at its destination")
        assert item["site"] == "JX-HN-01" and item["open_transfer"] is None
        records = await read_topic(settings, "circulation.transfers", at_least=2)
        completed = events_of(records, "circulation.transfer_completed")
        assert [e["data"]["transfer_id"] for e in completed] == [transfer_id]

        # logistics confirming the arrival later is not an anomaly
        await produce(settings, "logistics.shipments", [cloud_event(
            "logistics.shipment_delivered", "N1",
            {"shipment_id": "S-1", "transfer_id": transfer_id, "barcode": "N1",
             "site": "JX-HN-01"}, source="branchline/logistics")])
        await produce(settings, "branch.events", [branch_event("branch.checkin", "JX-HN-01", "N1")])

        async def settled():
            async with client.service.ctx.sessionmaker() as session:
                return (await session.execute(select(func.count()).select_from(Anomaly))).scalar()

        await asyncio.sleep(2)
        assert await settled() == 0


async def test_a_hold_request_the_rules_refuse_is_an_anomaly_not_a_crash(infra: Infra) -> None:
    """Every branch type is handled now: a hold request for a title nobody has, over HTTP
    and on the topic, is answered with an anomaly for staff and the stream moves on."""
    settings = await new_env(infra)
    desk = token("desk", site="JX-B")
    hold = cloud_event("branch.hold_requested", "P1",
                       {"branch": "JX-B", "patron": "P1", "isbn": "9787020002207"},
                       source="branch/JX-B")
    again = {**hold, "id": "evt-again"}
    async with running_service(SPEC, settings) as client:
        r = await client.post("/branch-events", json=[hold], headers=desk)
        assert r.status_code == 202, r.text
        await produce(settings, "branch.events", [again])

        async def refused() -> list[Anomaly]:
            async with client.service.uow() as uow:
                rows = (await uow.session.exec(select(Anomaly).where(
                    col(Anomaly.kind) == "hold_refused"))).all()
            return list(rows) if len(rows) == 2 else []

        anomalies = await eventually(refused, what="two refused hold requests")
        assert all("JX-B" in a.detail for a in anomalies)
        assert await read_topic(settings, "dlq.circulation", at_least=0, settle=1.0) == []


async def test_errors_are_problem_responses(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        r = await client.get("/items/NOPE", headers=token("admin"))
        assert r.status_code == 404
        body = r.json()
        assert body["type"].endswith("/not-found") and body["status"] == 404
        assert "NOPE" in body["detail"]
        r = await client.get("/items/NOPE")
        assert r.status_code == 401 and r.json()["type"].endswith("/unauthorized")


async def test_a_late_offline_checkout_is_reconciled_not_applied_on_top(infra: Infra) -> None:
    """A kiosk uploads its offline 10:00 check-out after the 10:05 check-in was applied:
    the item stays on its way home, the loan is recorded as 10:00-10:05."""
    settings = await new_env(infra)
    kiosk = token("branch_system", site="JX-HY-02")
    async with running_service(SPEC, settings) as client:
        await produce(settings, "cataloging.items", [item_cataloged("LATE-1", "JX-HN-01")])

        async def registered():
            r = await client.get("/items/LATE-1", headers=token("admin"))
            return r.status_code == 200

        await eventually(registered, what="item registered")
        checkin = branch_event("branch.checkin", "JX-HY-02", "LATE-1")
        checkin["time"] = "2026-11-23T10:05:00+08:00"
        checkout = branch_event("branch.checkout", "JX-HY-02", "LATE-1", patron="P-9")
        checkout["time"] = "2026-11-23T10:00:00+08:00"
        for event in (checkin, checkout):  # in arrival order, not time order
            r = await client.post("/branch-events", json=event, headers=kiosk)
            assert r.status_code == 202, r.text
        later = branch_event("branch.renewal", "JX-HY-02", "LATE-1", patron="P-9")
        later["time"] = "2026-11-23T10:01:00+08:00"
        r = await client.post("/branch-events", json=later, headers=kiosk)
        assert r.status_code == 202

        async def settled():
            async with client.service.uow() as uow:
                loans = (await uow.session.exec(select(Loan).where(
                    col(Loan.barcode) == "LATE-1"))).all()
                kinds = (await uow.session.exec(select(Anomaly.kind).where(
                    col(Anomaly.barcode) == "LATE-1"))).all()
            return (loans, kinds) if loans and "late_renewal" in kinds else None

        loans, kinds = await eventually(settled, what="the late facts reconciled")
        assert "checkout_while_on_loan" not in kinds  # reconciled: nothing was on loan
        [loan] = loans
        assert loan.checked_out_at.isoformat() == "2026-11-23T02:00:00+00:00"
        assert loan.returned_at is not None
        assert loan.returned_at.isoformat() == "2026-11-23T02:05:00+00:00"
        view = (await client.get("/items/LATE-1", headers=token("admin"))).json()
        assert view["status"] == "in_transit" and view["loan"] is None
        assert view["open_transfer"]["to_site"] == "JX-HN-01"
        records = await read_topic(settings, "circulation.transfers", at_least=1, settle=1.0)
        assert not events_of(records, "circulation.transfer_cancelled")


async def test_staff_views_anomalies_transfers_and_a_readers_loans(infra: Infra) -> None:
    settings = await new_env(infra)
    hn, hy = token("desk", site="JX-HN-01"), token("desk", site="JX-HY-02")
    async with running_service(SPEC, settings) as client:
        await produce(settings, "cataloging.items", [item_cataloged("V1", "JX-HN-01"),
                                                     item_cataloged("V2", "JX-HN-01")])

        async def registered():
            return all([(await client.get(f"/items/{b}", headers=token("admin"))).status_code
                        == 200 for b in ("V1", "V2")])

        await eventually(registered, what="item registered")
        out = branch_event("branch.checkout", "JX-HN-01", "V1", patron="P-7",
                           due="2000-01-01")
        renew = branch_event("branch.renewal", "JX-HY-02", "NEVER-LENT", patron="P-7")
        back = branch_event("branch.checkin", "JX-HY-02", "V1")
        unlent = branch_event("branch.checkin", "JX-HY-02", "V2")  # on HN's shelf, never lent
        for event, desk in ((out, hn), (renew, hy), (unlent, hy)):
            assert (await client.post("/branch-events", json=event,
                                      headers=desk)).status_code == 202

        async def overdue():
            r = await client.get("/sites/JX-HN-01/overdue", headers=hn)
            return r.json() if r.json() else None

        [loan] = await eventually(overdue, what="an overdue loan")
        assert loan["barcode"] == "V1" and loan["overdue"] is True
        r = await client.get("/patrons/P-7", headers=hn)
        assert [x["barcode"] for x in r.json()["loans"]] == ["V1"]
        assert (await client.get("/patrons/P-7", headers=token("driver", driver="D"))
                ).status_code == 403
        assert (await client.post("/branch-events", json=back, headers=hy)).status_code == 202

        async def anomalies():
            r = await client.get("/anomalies", headers=hy)
            kinds = {a["kind"] for a in r.json()}
            wanted = {"unknown_item", "renewal_without_loan", "checkin_without_loan"}
            return r.json() if wanted <= kinds else None

        found = await eventually(anomalies, what="the renewal's anomalies at JX-HY-02")
        assert all(a["site"] == "JX-HY-02" for a in found)
        assert (await client.get("/anomalies", headers=hn)).json() == []  # not theirs
        first = found[0]["id"]
        r = await client.post(f"/anomalies/{first}/resolve",
                              json={"resolution": "barcode label replaced"}, headers=hn)
        assert r.status_code == 403
        r = await client.post(f"/anomalies/{first}/resolve",
                              json={"resolution": "barcode label replaced"}, headers=hy)
        assert r.status_code == 200 and r.json()["resolved_by"]
        r = await client.post(f"/anomalies/{first}/resolve",
                              json={"resolution": "again"}, headers=hy)
        assert r.status_code == 409
        assert first not in [a["id"] for a in (await client.get(
            "/anomalies", headers=hy)).json()]

        # V2 went home as any return away from home does; it arrives there.
        assert (await client.post("/branch-events", headers=hn, json=branch_event(
            "branch.checkin", "JX-HN-01", "V2"))).status_code == 202

        async def v2_home():
            r = await client.get("/items/V2", headers=hn)
            return r.json()["status"] == "available"

        await eventually(v2_home, what="V2 back on its shelf")

        async def transfer_out():
            r = await client.get("/sites/JX-HY-02/transfers",
                                 params={"direction": "out"}, headers=hy)
            return r.json() or None

        [moving] = await eventually(transfer_out, what="the transfer home")
        assert (moving["barcode"], moving["to_site"]) == ("V1", "JX-HN-01")
        r = await client.get("/sites/JX-HN-01/transfers", headers=hn)
        assert [t["barcode"] for t in r.json()] == ["V1"]
        r = await client.get("/sites/JX-HN-01/transfers",
                             params={"older_than_days": 3}, headers=hn)
        assert r.json() == []  # not late yet
        # four days on, the job finds it late and announces it once
        later = datetime.now(UTC) + timedelta(days=4)
        for _ in range(2):
            async with client.service.uow() as uow:
                assert await announce_late_transfers(uow, later) == {"JX-HN-01": 1}
        records = await read_topic(settings, "circulation.transfers", at_least=2, settle=1.0)
        [late] = events_of(records, "circulation.transfer_late")
        assert (late["subject"], late["data"]["to_site"]) == ("V1", "JX-HN-01")
        assert late["data"]["age_days"] >= 4


async def test_loan_policies_set_due_dates_renewals_and_limits(infra: Infra) -> None:
    settings = await new_env(infra, loan_max_items=1)
    desk = token("desk", site="JX-HN-01")
    async with running_service(SPEC, settings) as client:
        r = await client.put("/loan-policies/haining", headers=token("admin"), json={
            "scope": "JX-HN-01", "loan_days": 14, "renewals": 0, "max_items": 1})
        assert r.status_code == 200, r.text
        assert (await client.put("/loan-policies/x", headers=desk, json={
            "loan_days": 1, "renewals": 0, "max_items": 1})).status_code == 403
        assert (await client.put("/loan-policies/x", headers=token("admin"), json={
            "loan_days": 0, "renewals": 0, "max_items": 1})).status_code == 422
        await produce(settings, "cataloging.items", [item_cataloged("PL-1", "JX-HN-01"),
                                                     item_cataloged("PL-2", "JX-HN-01")])

        async def registered():
            r = await client.get("/items/PL-2", headers=token("admin"))
            return r.status_code == 200

        await eventually(registered, what="items registered")
        out = branch_event("branch.checkout", "JX-HN-01", "PL-1", patron="P-5")
        out["time"] = "2026-11-02T10:00:00+08:00"
        second = branch_event("branch.checkout", "JX-HN-01", "PL-2", patron="P-5")
        second["time"] = "2026-11-02T10:01:00+08:00"
        renew = branch_event("branch.renewal", "JX-HN-01", "PL-1", patron="P-5")
        renew["time"] = "2026-11-10T10:00:00+08:00"
        for event in (out, second, renew):
            assert (await client.post("/branch-events", json=event,
                                      headers=desk)).status_code == 202

        async def anomalies():
            kinds = {a["kind"] for a in (await client.get("/anomalies", headers=desk)).json()}
            return kinds if {"over_loan_limit", "renewal_over_limit"} <= kinds else None

        await eventually(anomalies, what="limit and renewal anomalies")
        r = await client.get("/patrons/P-5", headers=desk)
        due = {x["barcode"]: x["due"] for x in r.json()["loans"]}
        assert due == {"PL-1": "2026-11-24", "PL-2": "2026-11-16"}  # 14 days, renewed on 10th


async def test_the_report_counts_loans_returns_anywhere_and_transfer_times(
        infra: Infra) -> None:
    """Two books of Haining: one lent at Haining and returned at Tongxiang (sent home),
    one new book delivered to Haining. The report counts them per site and for the
    network; a period before them counts nothing."""
    settings = await new_env(infra)
    desk = {site: token("desk", site=site) for site in ("JX-HN-01", "JX-TX-01")}
    async with running_service(SPEC, settings) as client:
        await produce(settings, "cataloging.items", [
            item_cataloged("R1", "JX-HN-01", "JX-HN-01"),
            item_cataloged("R2", "JX-HN-01", "JX-CENTRAL")])

        def status_is(barcode: str, status: str) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                r = await client.get(f"/items/{barcode}", headers=token("admin"))
                return bool(r.json().get("status") == status)
            return check

        await eventually(status_is("R1", "available"), what="R1 on the shelf")
        await eventually(status_is("R2", "in_transit"), what="R2 sent to Haining")
        for site, event in (("JX-HN-01", branch_event("branch.checkout", "JX-HN-01", "R1",
                                                      patron="P-1")),
                            ("JX-TX-01", branch_event("branch.checkin", "JX-TX-01", "R1")),
                            ("JX-HN-01", branch_event("branch.checkin", "JX-HN-01", "R2"))):
            r = await client.post("/branch-events", json=event, headers=desk[site])
            assert r.status_code == 202, r.text
            await asyncio.sleep(0.3)  # one after the other, as at the desks
        await eventually(status_is("R2", "available"), what="R2 arrived")
        await eventually(status_is("R1", "in_transit"), what="R1 sent home")

        today = datetime.now(UTC).date()
        period = {"from": (today - timedelta(days=1)).isoformat(),
                  "to": (today + timedelta(days=1)).isoformat()}
        r = await client.get("/report", params=period, headers=token("dispatcher"))
        assert r.status_code == 200, r.text
        report = r.json()
        sites = {s["site"]: s for s in report["sites"]}
        assert sites["JX-HN-01"]["loans"] == 1 and sites["JX-TX-01"]["returns"] == 1
        assert sites["JX-TX-01"]["returned_elsewhere"] == 1
        assert sites["JX-HN-01"]["transfers_completed"] == 1  # R2, new, delivered
        assert sites["JX-HN-01"]["transfer_hours_median"] is not None
        assert sites["JX-HN-01"]["open_transfers_in"] == 1  # R1 on its way home
        assert sites["JX-TX-01"]["open_transfers_out"] == 1
        network = report["network"]
        assert (network["loans"], network["returns"], network["transfers_completed"]) == (1, 1, 1)

        r = await client.get("/report", params={"from": "2020-01-01", "to": "2020-01-31"},
                             headers=token("dispatcher"))
        assert r.json()["network"]["loans"] == 0
        r = await client.get("/report", params={"from": "2026-02-01", "to": "2026-01-01"},
                             headers=token("dispatcher"))
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "to"]
        r = await client.get("/report", params=period, headers=desk["JX-HN-01"])
        assert r.status_code == 403

