"""`branchline acquisition bench`: a network-sized order, opened and received at once.

It starts its own embedded Postgres and broker and the four services, loads the reference
Jiaxing network (265 sites), then, as the acquisition center does for a big buy:

* creates an order of 2,000 lines (5,000 copies) split over 100 branches and opens it —
  timed: opening encumbers every line and writes `acquisition.order_opened` (in parts
  under the record limit);
* once circulation has counted the copies on order, receives all 5,000 copies in one
  receipt — timed: 5,000 copy ids and their events;
* times how long until cataloging has made the 5,000 items, circulation has put every
  one on a transfer to its owning branch, and logistics has made its shipment.

Raw baselines from the same run: single-row Postgres commits/s and Kafka messages/s.
Results: a markdown table on stdout and `devtools/bench/results/acquisition.{json,md}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from devtools.bench.run import (
    bench_stack,
    cpu_snapshot,
    machine,
    on_fresh_infra,
    raw_kafka,
    raw_postgres,
    say,
    write_results,
)
from devtools.infra import EmbeddedKafka, EmbeddedPostgres
from devtools.stack import Stack
from shared.contracts import SERVICES, TOPICS
from shared.messaging.kafka import ensure_topics
from shared.service.auth import issue_token
from shared.service.settings import PROJECT_ROOT

NETWORK = PROJECT_ROOT / "services" / "logistics" / "data" / "jiaxing_network.json"
RESULTS = Path(__file__).parent / "results"


def isbn13(first12: str) -> str:
    """The ISBN-13 with its check digit, so the bench orders real-looking numbers."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
    return first12 + str((10 - total % 10) % 10)


def order_body(branches: list[str], lines: int, copies: int) -> dict[str, Any]:
    """`lines` lines with `copies` copies in all, each line's copies on consecutive
    branches of the list (round robin), so every branch gets its share."""
    body_lines = []
    cursor = 0
    for n in range(lines):
        quantity = copies // lines + (1 if n < copies % lines else 0)
        distribution: list[dict[str, Any]] = []
        for _ in range(quantity):
            branch = branches[cursor % len(branches)]
            cursor += 1
            if distribution and distribution[-1]["branch"] == branch:
                distribution[-1]["copies"] += 1
            else:
                distribution.append({"branch": branch, "copies": 1})
        body_lines.append({
            "isbn": isbn13(f"978750{n:06d}"), "title": f"Bench title {n}", "author": "Bench",
            "unit_price": "25.00", "quantity": quantity, "distribution": distribution})
    return {"vendor_id": "V-BENCH", "fund_code": "F-BENCH", "currency": "CNY",
            "lines": body_lines}


async def count(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def until(dsn: str, sql: str, target: int, timeout: float, since: float) -> float:
    """Seconds from `since` until `sql` counts `target` rows (nan on timeout)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if await count(dsn, sql) >= target:
            return time.perf_counter() - since
        await asyncio.sleep(0.05)
    return float("nan")


async def run(stack: Stack, dsn: str, args: argparse.Namespace,
              extra: dict[str, int]) -> dict[str, Any]:
    admin = {"Authorization": "Bearer " + issue_token("admin", key=stack.key)}
    staff = {"Authorization": "Bearer " + issue_token("acquisitions", key=stack.key)}
    network = json.loads(NETWORK.read_text())
    branches = [s["code"] for s in network["sites"]
                if s["kind"] in ("county", "town", "village")][:args.branches]
    async with httpx.AsyncClient(timeout=120) as client:
        r = await client.post(stack.url("logistics") + "/network", json=network, headers=admin)
        r.raise_for_status()
        say(f"  network loaded; waiting for acquisition to know its {len(network['sites'])} "
            "sites ...")
        known = await until(dsn, "SELECT count(*) FROM acquisition.site",
                            len(network["sites"]), 60, time.perf_counter())
        if known != known:
            raise RuntimeError("acquisition never heard of the network's sites")
        acq = stack.url("acquisition")
        (await client.post(acq + "/vendors", headers=staff, json={
            "vendor_id": "V-BENCH", "name": "Bench Books"})).raise_for_status()
        (await client.post(acq + "/funds", headers=staff, json={
            "fund_code": "F-BENCH", "name": "Bench", "budget": "10000000.00",
            "currency": "CNY"})).raise_for_status()
        body = order_body(branches, args.lines, args.copies)
        size = len(json.dumps(body))
        say(f"  creating an order of {args.lines} lines, {args.copies} copies over "
            f"{len(branches)} branches ({size // 1024} KiB) ...")
        t = time.perf_counter()
        r = await client.post(acq + "/orders", headers=staff, json=body)
        r.raise_for_status()
        create_s = time.perf_counter() - t
        order_id = r.json()["order_id"]
        say("  opening it ...")
        t = time.perf_counter()
        r = await client.post(f"{acq}/orders/{order_id}/open", headers=staff)
        r.raise_for_status()
        open_s = time.perf_counter() - t
        lines = [{"line_id": ln["line_id"], "quantity": ln["quantity"]}
                 for ln in r.json()["lines"]]
        # Copies arrive days after an order opens: let circulation finish counting them
        # on order first, so the receipt is timed on its own, not against that work.
        await until(dsn, "SELECT count(*) FROM circulation.ordered_line", len(lines),
                    args.timeout, time.perf_counter())
        say(f"  receiving all {args.copies} copies in one receipt ...")
        processes = {name: proc.pid for name, proc in stack.procs.items()} | extra
        cpu_before = cpu_snapshot(processes)
        t = time.perf_counter()
        r = await client.post(f"{acq}/orders/{order_id}/receipts", headers=staff,
                              json={"lines": lines})
        r.raise_for_status()
        receipt_s = time.perf_counter() - t
        received_at = time.perf_counter()
        copies = len(r.json()["copies"])
    say("  waiting for the copies to be catalogued and sent to their branches ...")
    catalogued_s = await until(
        dsn, "SELECT count(*) FROM cataloging.item WHERE copy_id IS NOT NULL", copies,
        args.timeout, received_at)
    transfers_s = await until(
        dsn, "SELECT count(*) FROM circulation.transfer WHERE reason = 'new_item'", copies,
        args.timeout, received_at)
    shipments_s = await until(dsn, "SELECT count(*) FROM logistics.shipment", copies,
                              args.timeout, received_at)
    cpu_after = cpu_snapshot(processes)
    cpu_s = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
    parts = await count(dsn, "SELECT count(*) FROM acquisition.outbox "
                             "WHERE event_type = 'acquisition.order_opened'")
    largest = await count(dsn, "SELECT coalesce(max(octet_length(value)), 0) FROM "
                               "acquisition.outbox")
    return {"lines": args.lines, "copies": copies, "branches": len(branches),
            "request_kib": size // 1024, "create_s": create_s, "open_s": open_s,
            "receipt_s": receipt_s, "catalogued_s": catalogued_s,
            "on_transfer_s": transfers_s, "shipments_s": shipments_s,
            "order_opened_parts": parts, "largest_event_kib": largest // 1024,
            "cpu_seconds_receipt_to_shipments": cpu_s}


def render(result: dict[str, Any]) -> str:
    s, b = result["system"], result["baselines"]
    rows = [
        ("raw Postgres single-row commits/s (1 / 8 connections)",
         f"{b['postgres']['commits_per_s_1_conn']:,.0f} / "
         f"{b['postgres']['commits_per_s_8_conns']:,.0f}"),
        ("raw Kafka messages/s (produce / consume, 300 B)",
         f"{b['kafka']['produce_per_s']:,.0f} / {b['kafka']['consume_per_s']:,.0f}"),
        (f"create order ({s['lines']} lines, {s['request_kib']} KiB)", f"{s['create_s']:.2f} s"),
        (f"open order ({s['order_opened_parts']} order_opened parts, largest event "
         f"{s['largest_event_kib']} KiB)", f"{s['open_s']:.2f} s"),
        (f"receive {s['copies']} copies (one receipt)", f"{s['receipt_s']:.2f} s"),
        ("receipt → all catalogued", f"{s['catalogued_s']:.2f} s"),
        ("receipt → all on transfer to their branch", f"{s['on_transfer_s']:.2f} s"),
        ("receipt → all shipments created", f"{s['shipments_s']:.2f} s"),
    ]
    lines = [f"Acquisition bench — {result['when']} — {result['machine']}", "",
             "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "CPU seconds used from the receipt until the last shipment:", "",
              "| process | CPU s |", "|---|---|"]
    lines += [f"| {name} | {cpu:.2f} |" for name, cpu in
              sorted(s["cpu_seconds_receipt_to_shipments"].items(), key=lambda kv: -kv[1])]
    return "\n".join(lines) + "\n"


async def measure(args: argparse.Namespace, pg: EmbeddedPostgres, kafka: EmbeddedKafka,
                  base: Path) -> dict[str, Any]:
    dsn = pg.url.replace("postgresql+asyncpg://", "postgresql://")
    await ensure_topics(kafka.bootstrap, TOPICS, partitions=4)
    say("  raw baselines: Kafka and Postgres ...")
    kafka_raw = await raw_kafka(kafka.bootstrap, n=20_000)
    pg_raw = await raw_postgres(dsn, seconds=2.0)
    stack, _ = bench_stack(pg, kafka, base, {"LOG_LEVEL": "WARNING", "ROUTE_PLAN_AT": ""})
    try:
        say("  starting the four services ...")
        for name in SERVICES:
            stack.start_service(name)
        await asyncio.to_thread(stack.wait_healthy, 90)
        system = await run(stack, dsn, args,
                           {"postgres": pg.pid or 0, "kafka broker": kafka.pid or 0})
    finally:
        await asyncio.to_thread(stack.stop)
    return {"when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "baselines": {"kafka": kafka_raw, "postgres": pg_raw}, "system": system}


def main(args: argparse.Namespace) -> int:
    result = on_fresh_infra("Acquisition bench",
                            lambda pg, kafka, base: measure(args, pg, kafka, base))
    write_results(RESULTS, "acquisition", result, render(result))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lines", type=int, default=2_000)
    parser.add_argument("--copies", type=int, default=5_000)
    parser.add_argument("--branches", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the copies to reach circulation")
