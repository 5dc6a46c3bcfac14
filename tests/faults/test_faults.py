"""Faults against the whole network, counted: nothing lost, nothing doubled, poison parked.

Four services, two replicas of circulation and of logistics, on their own embedded broker
and Postgres. Each scenario registers items owned by Haining, then branch systems at Pinghu
check them in over HTTP (each one goes home: a transfer and a shipment) and check 10 % of
them out again (the transfer and its shipment are cancelled, the item is on loan), with
10 % of the events sent twice and the whole stream interleaved at random (each item's own
events stay in the order they happened); 1 % poison records of every kind are produced
straight to branch.events. A fault strikes a third of the way through. Afterwards:

- every accepted branch event is in circulation's inbox (accounted for);
- exactly one transfer and one shipment per checked-in item; the shipment of a cancelled
  transfer is cancelled, never left to be driven;
- no item is available while on loan;
- every poison record is in dlq.circulation or parked, with its reason.

`make test` runs it small (FAULT_SCALE unset); `make faults` runs it at full size and
prints the table (fault, events sent, lost, doubled, DLQ/parked).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from shared.messaging import maintenance
from tests.faults.cluster import Cluster
from tests.support import (
    SIGNING_KEY,
    asyncpg_dsn,
    cloud_event,
    eventually,
    item_cataloged,
    produce,
    read_topic,
)

pytestmark = pytest.mark.faults

FULL = os.environ.get("FAULT_SCALE") == "full"
ITEMS = 2000 if FULL else 150
FREEZE_S = 30 if FULL else 5
OWNER, RETURNED_AT = "JX-HN-01", "JX-PH-01"
REPORT: list[dict[str, Any]] = []


@dataclass
class Sent:
    accepted: set[str]
    sent: int
    checked_out: set[str]
    barcodes: list[str]
    poison: dict[bytes, str]


def _token() -> dict[str, str]:
    from shared.service.auth import issue_token

    return {"Authorization": "Bearer " + issue_token("branch_system", site=RETURNED_AT,
                                                     key=SIGNING_KEY)}


def _stream(tag: str, rng: random.Random) -> tuple[list[dict[str, Any]], list[str], set[str]]:
    barcodes = [f"F{tag}{i:05d}" for i in range(ITEMS)]
    checked_out = set(rng.sample(barcodes, max(1, ITEMS // 10)))
    t0 = datetime.now(UTC)
    lanes: list[list[dict[str, Any]]] = []
    for i, barcode in enumerate(barcodes):
        checkin = cloud_event("branch.checkin", barcode,
                              {"branch": RETURNED_AT, "barcode": barcode},
                              source=f"branch/{RETURNED_AT}", time=t0 + timedelta(seconds=i))
        lane = [checkin]
        if barcode in checked_out:
            lane.append(cloud_event(
                "branch.checkout", barcode,
                {"branch": RETURNED_AT, "barcode": barcode, "patron": f"P{i}"},
                source=f"branch/{RETURNED_AT}", time=t0 + timedelta(hours=1, seconds=i)))
        lanes.append(lane)
    # Interleave the items at random; each item's events keep their order.
    stream: list[dict[str, Any]] = []
    while lanes:
        lane = lanes[rng.randrange(len(lanes))]
        stream.append(lane.pop(0))
        if not lane:
            lanes.remove(lane)
    for event in rng.sample(stream, len(stream) // 10):  # 10 % sent a second time, later
        at = stream.index(event) + 1
        stream.insert(rng.randrange(at, len(stream) + 1), event)
    return stream, barcodes, checked_out


async def _poison(cluster: Cluster, tag: str) -> dict[bytes, str]:
    """1 % poison records of every kind, straight onto branch.events."""
    per_kind = max(1, ITEMS // 100 // 5)
    kinds: dict[bytes, str] = {}
    records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
    for i in range(per_kind):
        key = f"P{tag}o{i}".encode()  # over the broker's record limit once dead-lettered
        records.append((key, b"x" * (1024 * 1024 + 10), []))
        kinds[key] = "oversized"
        key = f"P{tag}t{i}".encode()
        bad = cloud_event("branch.checkin", key.decode(),
                          {"branch": RETURNED_AT, "barcode": key.decode()},
                          source=f"branch/{RETURNED_AT}")
        bad["type"] = []
        records.append((key, json.dumps(bad).encode(), []))
        kinds[key] = "bad_type"
        key = f"P{tag}n{i}".encode()
        records.append((key, b"{not json", [("trace", b"a\x00b")]))
        kinds[key] = "nul_header"
        key = f"P{tag}f{i}".encode()
        forged = cloud_event("logistics.shipment_delivered", key.decode(),
                             {"shipment_id": "S", "transfer_id": "T", "barcode": key.decode(),
                              "site": OWNER}, source="branchline/logistics")
        records.append((key, json.dumps(forged).encode(), []))
        kinds[key] = "forged_type"
        key = f"P{tag}s{i}".encode()
        wrong = cloud_event("branch.checkin", key.decode(),
                            {"branch": RETURNED_AT, "barcode": f"OTHER{tag}{i}"},
                            source=f"branch/{RETURNED_AT}")
        records.append((key, json.dumps(wrong).encode(), []))
        kinds[key] = "wrong_subject"
    producer = AIOKafkaProducer(bootstrap_servers=cluster.kafka.bootstrap, acks="all",
                                max_request_size=4 * 1024 * 1024)
    await producer.start()
    refused: set[bytes] = set()
    try:
        for key, value, headers in records:
            try:
                await (await producer.send(cluster.settings.topic("branch.events"),
                                           key=key, value=value, headers=headers))
            except Exception:  # noqa: BLE001 - a broker that refuses it never accepted it
                refused.add(key)
    finally:
        await producer.stop()
    return {k: v for k, v in kinds.items() if k not in refused}


async def _post(client: httpx.AsyncClient, cluster: Cluster, chunk: list[dict[str, Any]],
                turn: int) -> bool:
    """POST one chunk to a circulation replica, the other one if that fails; True if 202.

    A branch system keeps trying (here up to about a minute) while both replicas are down.
    """
    replicas = ["circulation-1", "circulation-2"]
    for attempt in range(120):
        name = replicas[(turn + attempt) % 2]
        try:
            r = await client.post(cluster.url(name) + "/branch-events", json=chunk,
                                  headers=_token(), timeout=15)
        except httpx.HTTPError:
            await asyncio.sleep(0.5)
            continue
        if r.status_code == 202:
            return True
        await asyncio.sleep(0.5)
    return False


async def _run(cluster: Cluster, fault: Callable[[], Awaitable[None]] | None,
               seed: int) -> Sent:
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:5]
    stream, barcodes, checked_out = _stream(tag, rng)
    settings = cluster.settings
    dsn = asyncpg_dsn(cluster.pg.url)
    await produce(settings, "cataloging.items", [item_cataloged(b, OWNER) for b in barcodes])

    async def registered() -> bool:
        return await _one(dsn, "SELECT count(*) FROM circulation.item WHERE barcode LIKE $1 "
                               "AND status = 'available'", f"F{tag}%") == ITEMS

    await eventually(registered, timeout=90, what="items registered")
    poison = await _poison(cluster, tag)
    accepted: set[str] = set()
    chunks = [stream[i:i + 25] for i in range(0, len(stream), 25)]
    fault_task: asyncio.Task[None] | None = None
    async with httpx.AsyncClient() as client:
        for turn, chunk in enumerate(chunks):
            if turn == len(chunks) // 3 and fault is not None:
                fault_task = asyncio.create_task(fault())
            if await _post(client, cluster, chunk, turn):
                accepted.update(e["id"] for e in chunk)
    if fault_task is not None:
        await fault_task
    return Sent(accepted, len(stream), checked_out, barcodes, poison)


async def _one(dsn: str, sql: str, *args: Any) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def _check(cluster: Cluster, name: str, sent: Sent) -> None:
    dsn = asyncpg_dsn(cluster.pg.url)
    tag_like = sent.barcodes[0][:6] + "%"
    total = len(sent.barcodes)

    async def settled() -> bool:
        shipped = await _one(dsn, "SELECT count(*) FROM logistics.shipment WHERE barcode LIKE $1",
                             tag_like)
        cancelled = await _one(
            dsn, "SELECT count(*) FROM logistics.shipment WHERE barcode LIKE $1 "
                 "AND status = 'cancelled'", tag_like)
        transfers = await _one(
            dsn, "SELECT count(*) FROM circulation.transfer WHERE barcode LIKE $1", tag_like)
        if shipped >= total and cancelled >= len(sent.checked_out):
            return True
        conn = await asyncpg.connect(dsn)
        try:
            stuck = await conn.fetch(
                "SELECT s.barcode, s.transfer_id, t.status FROM logistics.shipment s JOIN "
                "circulation.transfer t USING (transfer_id) WHERE s.barcode LIKE $1 AND "
                "s.status <> 'cancelled' AND t.status = 'cancelled' LIMIT 3", tag_like)
            story = []
            for row in stuck:
                rows = await conn.fetch(
                    "SELECT id, event_type, NOT EXISTS (SELECT 1 FROM "
                    "circulation.outbox_unpublished u WHERE u.id = o.id) AS published FROM "
                    "circulation.outbox o WHERE key = $1 ORDER BY id", row[0].encode())
                story.append((row[0], [tuple(r) for r in rows]))
        finally:
            await conn.close()
        raise AssertionError(
            f"transfers {transfers}/{total}, shipments {shipped}/{total}, "
            f"cancelled {cancelled}/{len(sent.checked_out)}; stuck: {story}")

    await eventually(settled, timeout=180, what=f"{name}: every shipment made or cancelled")
    await asyncio.sleep(2)  # let any redelivery show itself
    conn = await asyncpg.connect(dsn)
    try:
        in_inbox = {r[0] for r in await conn.fetch(
            "SELECT id FROM circulation.inbox WHERE source = $1 AND id = ANY($2::text[])",
            f"branch/{RETURNED_AT}", list(sent.accepted))}
        transfers = await conn.fetch(
            "SELECT barcode, transfer_id, status FROM circulation.transfer "
            "WHERE barcode LIKE $1", tag_like)
        shipments = await conn.fetch(
            "SELECT barcode, transfer_id, status FROM logistics.shipment WHERE barcode LIKE $1",
            tag_like)
        available_on_loan = await conn.fetchval(
            "SELECT count(*) FROM circulation.item WHERE barcode LIKE $1 AND status = "
            "'available' AND loan_id IS NOT NULL", tag_like)
        on_loan = {r[0] for r in await conn.fetch(
            "SELECT barcode FROM circulation.item WHERE barcode LIKE $1 AND status = 'on_loan'",
            tag_like)}
        parked = {bytes(r[0]) for r in await conn.fetch(
            "SELECT key FROM circulation.parked WHERE key IS NOT NULL")}
    finally:
        await conn.close()
    expected_dlq = len(set(sent.poison) - parked)
    dlq = await read_topic(cluster.settings, "dlq.circulation", at_least=expected_dlq,
                           timeout=30, where=lambda r: r.key in sent.poison, settle=0.5)
    dead = {r.key for r in dlq}

    transfers_per = {b: 0 for b in sent.barcodes}
    for row in transfers:
        transfers_per[row["barcode"]] += 1
    shipments_per = {t["transfer_id"]: [] for t in transfers}
    for row in shipments:
        shipments_per.setdefault(row["transfer_id"], []).append(row["status"])
    cancelled = {t["transfer_id"] for t in transfers if t["status"] == "cancelled"}
    lost = (len(sent.accepted - in_inbox)
            + sum(1 for n in transfers_per.values() if n == 0)
            + sum(1 for s in shipments_per.values() if not s))
    doubled = (sum(n - 1 for n in transfers_per.values() if n > 1)
               + sum(len(s) - 1 for s in shipments_per.values() if len(s) > 1))
    REPORT.append({"fault": name, "sent": sent.sent, "accepted": len(sent.accepted),
                   "lost": lost, "doubled": doubled,
                   "poison": len(sent.poison),
                   "dlq": len(dead), "parked": len(set(sent.poison) & parked)})
    assert sent.accepted - in_inbox == set(), "accepted branch events not accounted for"
    assert lost == 0 and doubled == 0, REPORT[-1]
    assert {t["barcode"] for t in transfers if t["transfer_id"] in cancelled} == \
        sent.checked_out
    for transfer_id in cancelled:
        assert shipments_per[transfer_id] == ["cancelled"], transfer_id
    for transfer_id, statuses in shipments_per.items():
        if transfer_id not in cancelled:
            assert statuses == ["created"], transfer_id
    assert available_on_loan == 0
    assert on_loan == sent.checked_out
    missing = {k: v for k, v in sent.poison.items() if k not in dead and k not in parked}
    assert missing == {}, f"poison neither dead-lettered nor parked: {missing}"


def _kill_and_restart(cluster: Cluster, name: str) -> Callable[[], Awaitable[None]]:
    async def fault() -> None:
        await asyncio.sleep(0.3)
        cluster.kill(name)
        await asyncio.sleep(1.0)
        cluster.start(name)
        await asyncio.to_thread(cluster.wait_healthy, [name])

    return fault


def _freeze_broker(cluster: Cluster) -> Callable[[], Awaitable[None]]:
    async def fault() -> None:
        pid = cluster.kafka.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(FREEZE_S)
        finally:
            os.kill(pid, signal.SIGCONT)

    return fault


def _restart_postgres(cluster: Cluster) -> Callable[[], Awaitable[None]]:
    async def fault() -> None:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(cluster.pg.restart)

    return fault


def _lose_broker(cluster: Cluster) -> Callable[[], Awaitable[None]]:
    """SIGKILL the memory-only broker and start it again empty on the same port, then do
    what `branchline up` does: create the topics, restart the services (their consumer
    positions belonged to the lost broker) and replay every outbox's retention."""

    async def fault() -> None:
        await asyncio.sleep(0.3)
        pid = cluster.kafka.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(1.0)
        # As the local stack's supervisor does: services stop, the broker starts empty, the
        # outboxes are re-queued, the services start again (see devtools/stack.py).
        for proc in cluster.procs.values():
            proc.terminate()
        for proc in cluster.procs.values():
            await asyncio.to_thread(proc.wait)
        await asyncio.to_thread(cluster.kafka.start)
        refilled = await maintenance.refill_broker(cluster.settings)
        assert all(isinstance(n, int) for n in refilled.values()), refilled
        for name in list(cluster.procs):
            cluster.start(name)
        await asyncio.to_thread(cluster.wait_healthy)

    return fault


FAULTS: dict[str, Callable[[Cluster], Callable[[], Awaitable[None]] | None]] = {
    "none (duplicates, shuffle, poison)": lambda c: None,
    "SIGKILL circulation replica": lambda c: _kill_and_restart(c, "circulation-1"),
    "SIGKILL logistics replica": lambda c: _kill_and_restart(c, "logistics-2"),
    "SIGKILL cataloging": lambda c: _kill_and_restart(c, "cataloging-1"),
    "SIGKILL acquisition": lambda c: _kill_and_restart(c, "acquisition-1"),
    f"broker SIGSTOP {FREEZE_S} s": _freeze_broker,
    "Postgres restarted": _restart_postgres,
    "broker killed, restarted empty, replayed": _lose_broker,
}


@pytest.mark.parametrize("name", list(FAULTS))
async def test_fault(cluster: Cluster, name: str) -> None:
    sent = await _run(cluster, FAULTS[name](cluster), seed=zlib.crc32(name.encode()))
    await _check(cluster, name, sent)


def test_report() -> None:
    """The table of the runs above (printed; written to $FAULTS_REPORT when set)."""
    lines = ["| fault | events sent (with duplicates) | distinct accepted | lost | doubled "
             "| poison | DLQ | parked |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['fault']} | {r['sent']} | {r['accepted']} | {r['lost']} | {r['doubled']} "
              f"| {r['poison']} | {r['dlq']} | {r['parked']} |" for r in REPORT]
    table = "\n".join(lines)
    print("\n" + table)
    if os.environ.get("FAULTS_REPORT"):
        with open(os.environ["FAULTS_REPORT"], "w", encoding="utf-8") as fh:
            fh.write(table + "\n")
    assert all(r["lost"] == 0 and r["doubled"] == 0 for r in REPORT)
