"""HTTP latency of circulation's desk calls at a steady offered rate, on a fresh local network.

`python -m devtools.bench.http_probe [--rate 200] [--seconds 10]` starts its own embedded
Postgres and broker and the four services (as `branchline bench` does), registers items,
then offers `POST /branch-events` (one check-in away from home each) and
`GET /items/{barcode}` at a fixed rate (open loop: a slow answer does not slow the
sender) and prints p50/p95/p99 and the number of errors for each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from devtools.bench.run import cataloged, checkin, pct, say, wait_count
from devtools.infra import EmbeddedKafka, EmbeddedPostgres, free_port
from devtools.stack import DEMO_NETWORK, Stack
from shared.contracts import SERVICES, TOPICS
from shared.messaging.kafka import ensure_topics, make_producer
from shared.service.auth import issue_token
from shared.service.settings import Settings


async def offered(rate: int, seconds: float, call: Any) -> tuple[list[float], int]:
    """Send `rate` calls a second for `seconds`; latencies (ms) of the successes, errors."""
    latencies: list[float] = []
    errors = 0

    async def one(n: int) -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            ok = await call(n)
        except httpx.HTTPError:
            ok = False
        if ok:
            latencies.append((time.perf_counter() - started) * 1000)
        else:
            errors += 1

    tasks = []
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    return latencies, errors


def summary(name: str, latencies: list[float], errors: int, rate: int) -> dict[str, Any]:
    result = {"call": name, "rate": rate, "ok": len(latencies), "errors": errors,
              "p50_ms": round(pct(latencies, 50), 1), "p95_ms": round(pct(latencies, 95), 1),
              "p99_ms": round(pct(latencies, 99), 1)}
    say(f"  {name:<28} {rate}/s: p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, "
        f"p99 {result['p99_ms']} ms, {len(latencies)} ok, {errors} errors")
    return result


async def probe(stack: Stack, settings: Settings, dsn: str, rate: int,
                seconds: float) -> list[dict[str, Any]]:
    items = int(rate * seconds) + 100
    barcodes = [f"HP{n:08d}" for n in range(items)]
    producer = make_producer(settings, "http-probe")
    await producer.start()
    try:
        for barcode in barcodes:
            await producer.send("cataloging.items", cataloged(barcode), key=barcode.encode())
        await producer.flush()
    finally:
        await producer.stop()
    await wait_count(dsn, "SELECT count(*) FROM circulation.item", items, 120, "items registered")
    desk = {"Authorization": "Bearer " + issue_token("branch_system", site="JX-PH-01",
                                                     key=stack.key)}
    admin = {"Authorization": "Bearer " + issue_token("admin", key=stack.key)}
    base = stack.url("circulation")
    async with httpx.AsyncClient(base_url=base, timeout=30,
                                 limits=httpx.Limits(max_connections=200)) as client:
        async def post_checkin(n: int) -> bool:
            r = await client.post("/branch-events", content=checkin(barcodes[n], "JX-PH-01"),
                                  headers={**desk, "Content-Type": "application/json"})
            return r.status_code == 202

        async def lookup(n: int) -> bool:
            r = await client.get(f"/items/{barcodes[n % items]}", headers=admin)
            return r.status_code == 200

        await offered(20, 1, lookup)  # warm the connections
        say(f"  offering {rate}/s for {seconds:g} s each ...")
        posts = summary("POST /branch-events (check-in)",
                        *await offered(rate, seconds, post_checkin), rate)
        gets = summary("GET /items/{barcode}", *await offered(rate, seconds, lookup), rate)
    return [posts, gets]


async def measure(args: argparse.Namespace, pg: EmbeddedPostgres, kafka: EmbeddedKafka,
                  base: Path) -> list[dict[str, Any]]:
    dsn = pg.url.replace("postgresql+asyncpg://", "postgresql://")
    await ensure_topics(kafka.bootstrap, TOPICS, partitions=4)
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, database_url=pg.url)
    stack = Stack(settings, base, {n: free_port() for n in SERVICES}, base / "logs",
                  extra_env={"LOG_LEVEL": "WARNING", "ROUTE_PLAN_AT": ""})
    stack.database_url, stack.kafka_bootstrap = pg.url, kafka.bootstrap
    try:
        for name in SERVICES:
            stack.start_service(name)
        await asyncio.to_thread(stack.wait_healthy, 90)
        network = json.loads(DEMO_NETWORK.read_text())
        async with httpx.AsyncClient(timeout=30) as client:
            await client.post(stack.url("logistics") + "/network", json=network, headers={
                "Authorization": "Bearer " + issue_token("admin", key=stack.key)})
        return await probe(stack, settings, dsn, args.rate, args.seconds)
    finally:
        await asyncio.to_thread(stack.stop)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="branchline-http-", dir="/tmp"))
    base.chmod(0o755)
    pg = EmbeddedPostgres(base / "pg", port=free_port())
    kafka = EmbeddedKafka(base / "kafka", port=free_port())
    try:
        say("HTTP probe: starting a fresh embedded Postgres and broker ...")
        pg.start()
        kafka.start()
        results = asyncio.run(measure(args, pg, kafka, base))
    finally:
        kafka.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
