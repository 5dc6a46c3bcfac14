"""The HTTP boundary against the real broker and Postgres: size limits, caps, NUL bytes,
durable ingress, tokens, health and who sees a loan's patron (docs/http.md#limits)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import text

from services.acquisition.spec import SPEC as ACQUISITION
from services.cataloging.spec import SPEC as CATALOGING
from services.circulation.spec import SPEC as CIRCULATION
from services.logistics.spec import SPEC as LOGISTICS
from shared.service.app import build_app
from shared.service.auth import WeakSigningKey, signing_key
from shared.service.settings import Settings
from tests.integration.test_cataloging import marc_file, marc_record
from tests.support import (
    SIGNING_KEY,
    Infra,
    branch_event,
    eventually,
    item_cataloged,
    new_env,
    produce,
    read_topic,
    running_service,
    token,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def problem_detail(r: httpx.Response) -> Any:
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    return r.json()["detail"]


def locs(r: httpx.Response) -> list[list[Any]]:
    return [e["loc"] for e in problem_detail(r)]


# --- body size ------------------------------------------------------------------------------


async def test_body_over_the_limit_is_413_before_auth_and_stops_reading(infra: Infra) -> None:
    settings = await new_env(infra, http_max_body_bytes=4096)
    async with running_service(LOGISTICS, settings) as client:
        # Content-Length over the limit: 413 naming it, before the (missing) token is checked.
        r = await client.post("/network", json={"sites": []})
        assert r.status_code == 401
        r = await client.post("/network", content=b"{" + b" " * 5000 + b"}",
                              headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert "4096 bytes" in problem_detail(r)

        # A chunked body (no Content-Length): reading stops at the first chunk past the limit.
        sent: list[int] = []

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(100):
                sent.append(i)
                yield b" " * 1024

        r = await client.post("/network", content=chunks(),
                              headers={"content-type": "application/json"})
        assert r.status_code == 413 and "4096 bytes" in problem_detail(r)
        assert len(sent) <= 6, f"read {len(sent)} chunks of 1 KiB past a 4 KiB limit"

    async with running_service(CATALOGING, settings) as client:
        # The MARC upload keeps its own 2 GiB limit (read from the route), far above 4 KiB.
        upload = marc_file(*[marc_record(None, f"Title {i} /", "Author,", "Press,", "2001.")
                             for i in range(60)])
        assert len(upload) > 4096
        r = await client.post("/imports", files={"file": ("a.mrc", upload)},
                              headers=token("cataloger"))
        assert r.status_code == 202, r.text
        r = await client.post("/imports", content=b"x",
                              headers={"content-length": str(3 * 1024 ** 3)})
        assert r.status_code == 413 and str(2 * 1024 ** 3 + 64 * 1024) in problem_detail(r)


# --- caps and NUL ---------------------------------------------------------------------------


async def test_caps_and_nul_bytes_are_422_naming_the_field_or_limit(infra: Infra) -> None:
    settings = await new_env(infra)
    staff = token("acquisitions")
    line = {"isbn": "9787020002207", "title": "Wei Cheng", "unit_price": "1.00", "quantity": 1,
            "distribution": [{"branch": "JX-HN-01", "copies": 1}]}
    order = {"vendor_id": "V", "fund_code": "F", "currency": "CNY", "lines": [line]}
    async with running_service(ACQUISITION, settings) as client:
        r = await client.post("/orders", headers=staff, json={**order, "lines": [line] * 5001})
        assert r.status_code == 422 and locs(r) == [["body", "lines"]]
        assert "5000" in problem_detail(r)[0]["msg"]
        big = {**line, "quantity": 2**31 + 1,
               "distribution": [{"branch": "JX-HN-01", "copies": 2**31 + 1}]}
        r = await client.post("/orders", headers=staff, json={**order, "lines": [big]})
        assert r.status_code == 422, r.text
        assert sorted(map(str, locs(r))) == sorted(map(str, [
            ["body", "lines", 0, "quantity"],
            ["body", "lines", 0, "distribution", 0, "copies"]]))
        assert all("100000" in e["msg"] for e in problem_detail(r))
        wide = {**line, "quantity": 301,
                "distribution": [{"branch": f"B{i}", "copies": 1} for i in range(301)]}
        r = await client.post("/orders", headers=staff, json={**order, "lines": [wide]})
        assert r.status_code == 422 and locs(r) == [["body", "lines", 0, "distribution"]]
        assert "300" in problem_detail(r)[0]["msg"]
        r = await client.post("/orders/O-1/receipts", headers=staff,
                              json={"line_id": "L", "quantity": 2**31})
        assert r.status_code == 422 and locs(r) == [["body", "quantity"]]
        # NUL in a JSON body field (Postgres cannot store it): named, not a 500.
        r = await client.post("/vendors", headers=staff,
                              json={"vendor_id": "V\x00", "name": "Xinhua"})
        assert r.status_code == 422 and locs(r) == [["body", "vendor_id"]]
        assert problem_detail(r)[0]["type"] == "nul_character"

    async with running_service(CATALOGING, settings) as client:
        r = await client.get("/search?q=Wei%00", headers=token("admin"))
        assert r.status_code == 422 and locs(r) == [["query", "q"]]
        r = await client.get("/items/JX%00", headers=token("admin"))
        assert r.status_code == 422 and locs(r) == [["path", "barcode"]]

    async with running_service(LOGISTICS, settings) as client:
        r = await client.get("/shipments?barcode=%00", headers=token("admin"))
        assert r.status_code == 422 and locs(r) == [["query", "barcode"]]
        scan = {"scan_id": "s-1", "route_id": "R", "site": "JX-HN-01", "kind": "load",
                "barcodes": [f"B{i}" for i in range(501)],
                "time": datetime.now(UTC).isoformat()}
        r = await client.post("/scans", json=scan, headers=token("driver", driver="D-1"))
        assert r.status_code == 422 and locs(r) == [["body", "barcodes"]]
        assert "500" in problem_detail(r)[0]["msg"]
        r = await client.post("/scans", json={**scan, "barcodes": ["B1"],
                                              "time": "9999-12-31T23:00:00-05:00"},
                              headers=token("driver", driver="D-1"))
        assert r.status_code == 422 and locs(r) == [["body", "time"]]


async def test_branch_events_caps_time_and_subject(infra: Infra) -> None:
    """Too many events, a time past 2200 and a subject other than the barcode: 422 each;
    a far-future check-out that arrives on the topic is dead-lettered naming the range."""
    settings = await new_env(infra)
    desk = token("desk", site="JX-HN-01")
    async with running_service(CIRCULATION, settings) as client:
        many = [branch_event("branch.checkin", "JX-HN-01", f"B{i}") for i in range(501)]
        r = await client.post("/branch-events", json=many, headers=desk)
        assert r.status_code == 422 and locs(r) == [["body"]]
        assert "at most 500" in problem_detail(r)[0]["msg"]

        late = branch_event("branch.checkout", "JX-HN-01", "B1", patron="P-1")
        late["time"] = "9999-12-31T23:59:59+08:00"
        r = await client.post("/branch-events", json=[late], headers=desk)
        assert r.status_code == 422 and locs(r) == [["body", 0, "time"]]
        assert "1900..2200" in problem_detail(r)[0]["msg"]

        other = branch_event("branch.checkin", "JX-HN-01", "B1")
        other["subject"] = "B2"
        r = await client.post("/branch-events", json=other, headers=desk)
        assert r.status_code == 422 and locs(r) == [["body", "subject"]]
        assert "'B1'" in problem_detail(r)[0]["msg"]

        # On the topic (written by a system that bypasses HTTP): dead-lettered, no overflow.
        await produce(settings, "cataloging.items", [item_cataloged("B1", "JX-HN-01")])

        async def registered() -> bool:
            return (await client.get("/items/B1", headers=token("admin"))).status_code == 200

        await eventually(registered, what="item registered")
        await produce(settings, "branch.events", [late])
        [record] = await read_topic(settings, "dlq.circulation", at_least=1, settle=0.5)
        headers = dict(record.headers)
        assert b"1900..2200" in headers["error"], headers["error"]
        item = (await client.get("/items/B1", headers=token("admin"))).json()
        assert item["status"] == "available" and item["loan"] is None


# --- durable ingress ------------------------------------------------------------------------


async def test_branch_events_are_accepted_into_the_outbox_while_the_relay_cannot_publish(
    infra: Infra,
) -> None:
    settings = await new_env(infra)
    async with running_service(CIRCULATION, settings) as client:
        service = client.service
        await produce(settings, "cataloging.items", [item_cataloged("D1", "JX-HN-01")])

        async def registered() -> bool:
            return (await client.get("/items/D1", headers=token("admin"))).status_code == 200

        await eventually(registered, what="item registered")
        # Nothing of this service reaches the broker now: its relay is stopped.
        assert service.relay is not None
        await service.relay.stop()

        checkin = branch_event("branch.checkin", "JX-HY-02", "D1")
        started = time.monotonic()
        r = await client.post("/branch-events", json=[checkin],
                              headers=token("branch_system", site="JX-HY-02"))
        assert r.status_code == 202, r.text
        assert time.monotonic() - started < 5
        async with service.ctx.sessionmaker() as session:
            rows = (await session.execute(text(
                "SELECT topic, key, value, event_type FROM circulation.outbox "
                "WHERE topic = 'branch.events' AND id IN "
                "(SELECT id FROM circulation.outbox_unpublished)"))).all()
        assert [(row.topic, bytes(row.key), row.event_type) for row in rows] == \
            [("branch.events", b"D1", "branch.checkin")]
        assert checkin["id"].encode() in bytes(rows[0].value)
        item = (await client.get("/items/D1", headers=token("admin"))).json()
        assert item["status"] == "available", "handled although never published"

        # Once a relay runs again the event is published, consumed and applied.
        service.relay = service.make_relay()
        service.relay.start()

        async def in_transit() -> dict[str, Any] | None:
            body = (await client.get("/items/D1", headers=token("admin"))).json()
            return body if body["status"] == "in_transit" else None

        item = await eventually(in_transit, what="check-in applied after the relay ran")
        assert item["site"] == "JX-HY-02"


# --- tokens, health, liveness, topics -------------------------------------------------------


async def test_tokens_need_exp_and_keys_need_32_bytes(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(CIRCULATION, settings) as client:
        forever = jwt.encode({"sub": "x", "role": "admin"}, SIGNING_KEY, algorithm="HS256")
        r = await client.get("/items/X", headers={"Authorization": f"Bearer {forever}"})
        assert r.status_code == 401 and '"exp"' in problem_detail(r)
        r = await client.get("/items/X", headers=token("admin"))
        assert r.status_code == 404
    short = settings.model_copy(update={"signing_key": "short-key-31-bytes-long-xxxxxxx"})
    with pytest.raises(WeakSigningKey, match=r"at least 32 are required.*secrets"):
        signing_key(short)
    with pytest.raises(WeakSigningKey):
        build_app(CIRCULATION, short, configure_logging=False)
    assert signing_key(settings.model_copy(update={"signing_key": "k" * 32})) == "k" * 32


async def test_health_names_no_hosts_and_live_checks_nothing(infra: Infra) -> None:
    dead = Settings(kafka_bootstrap_servers="127.0.0.1:9", BRANCHLINE_SIGNING_KEY=SIGNING_KEY,
                    database_url="postgresql+asyncpg://secretuser:pw@127.0.0.1:9/nowhere")
    app = build_app(CIRCULATION, dead, configure_logging=False)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://svc") as client:
            r = await client.get("/live")
            assert r.status_code == 200 and r.json() == {"status": "ok"}
            r = await client.get("/health")
            assert r.status_code == 503
            assert r.json() == {"database": "unreachable", "broker": "unreachable",
                                "consumers": "starting", "status": "degraded"}
            assert "secretuser" not in r.text and "127.0.0.1" not in r.text
    finally:
        await app.state.service.engine.dispose()
    manifest = (ROOT / "deploy/k8s/circulation.yaml").read_text()
    assert re.search(r"livenessProbe: \{httpGet: \{path: /live,", manifest)
    assert re.search(r"readinessProbe: \{httpGet: \{path: /health,", manifest)


def test_topic_creation_errors_other_than_exists_are_raised() -> None:
    from aiokafka.protocol.admin import CreateTopicsResponse_v3

    from shared.messaging.kafka import TopicCreationError, _raise_topic_errors

    _raise_topic_errors(CreateTopicsResponse_v3(0, [("a", 0, None), ("b", 36, "exists")]))
    refused = CreateTopicsResponse_v3(0, [("c", 38, "Replication factor: 3 larger than "
                                                     "available brokers: 1.")])
    with pytest.raises(TopicCreationError, match=r"'c'.*Replication factor: 3"):
        _raise_topic_errors(refused)
    assert Settings().kafka_replication_factor == 1
    assert Settings(KAFKA_REPLICATION_FACTOR="3").kafka_replication_factor == 3


# --- who sees a loan's patron ---------------------------------------------------------------


async def test_loan_patron_is_shown_only_to_the_lending_site_and_admin(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(CIRCULATION, settings) as client:
        await produce(settings, "cataloging.items", [item_cataloged("L1", "JX-HN-01")])

        async def registered() -> bool:
            return (await client.get("/items/L1", headers=token("admin"))).status_code == 200

        await eventually(registered, what="item registered")
        checkout = branch_event("branch.checkout", "JX-HN-01", "L1", patron="P-0042")
        r = await client.post("/branch-events", json=checkout,
                              headers=token("desk", site="JX-HN-01"))
        assert r.status_code == 202, r.text

        async def on_loan() -> dict[str, Any] | None:
            body = (await client.get("/items/L1", headers=token("admin"))).json()
            return body if body["loan"] else None

        assert (await eventually(on_loan, what="loan"))["loan"]["patron"] == "P-0042"
        sees = {
            "desk here": token("desk", site="JX-HN-01"),
            "branch system here": token("branch_system", site="JX-HN-01"),
        }
        hidden = {
            "desk elsewhere": token("desk", site="JX-HY-02"),
            "branch system elsewhere": token("branch_system", site="JX-HY-02"),
            "driver": token("driver", driver="D-1"),
            "dispatcher": token("dispatcher"),
            "cataloger": token("cataloger"),
        }
        for who, headers in {**sees, **hidden}.items():
            loan = (await client.get("/items/L1", headers=headers)).json()["loan"]
            assert loan["loan_id"] and loan["branch"] == "JX-HN-01", who
            assert loan["patron"] == ("P-0042" if who in sees else None), who
