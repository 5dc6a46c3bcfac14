"""HTTP latency of circulation's desk calls at a steady offered rate (for `branchline bench`).

Open loop: a call is started every 1/rate s whatever the answers before it, so a slow
answer does not slow the sender (as desks and self-check machines do not wait for each
other). Beside the call, `GET /live` (no database, no token) is offered at a tenth of the
rate on the same process: the raw baseline of that process's event loop at that moment.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx

from devtools.bench.common import checkin, pct, say


async def offered(rate: int, seconds: float, call: Callable[[int], Awaitable[bool]],
                  ) -> tuple[list[float], int]:
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


def summary(name: str, latencies: list[float], errors: int, rate: int) -> dict[str, object]:
    result: dict[str, object] = {
        "call": name, "rate": rate, "ok": len(latencies), "errors": errors,
        "p50_ms": round(pct(latencies, 50), 1), "p95_ms": round(pct(latencies, 95), 1),
        "p99_ms": round(pct(latencies, 99), 1)}
    say(f"    {name:<28} {rate}/s: p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, "
        f"p99 {result['p99_ms']} ms, {len(latencies)} ok, {errors} errors")
    return result


async def under_load(base_url: str, call: str, rate: int, seconds: float,
                     barcodes: list[str], *, desk: dict[str, str],
                     admin: dict[str, str]) -> list[dict[str, object]]:
    """`call` (a check-in posted, or an item looked up) at `rate`/s on one process, with
    `GET /live` beside it; each one's summary."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30,
                                 limits=httpx.Limits(max_connections=200)) as client:
        async def post_checkin(n: int) -> bool:
            r = await client.post("/branch-events", content=checkin(barcodes[n], "JX-PH-01"),
                                  headers={**desk, "Content-Type": "application/json"})
            return r.status_code == 202

        async def lookup(n: int) -> bool:
            r = await client.get(f"/items/{barcodes[n % len(barcodes)]}", headers=admin)
            return r.status_code == 200

        async def live(_: int) -> bool:
            return (await client.get("/live")).status_code == 200

        await offered(20, 0.5, live)  # open the connections
        work = post_checkin if call.startswith("POST") else lookup
        measured, baseline = await asyncio.gather(
            offered(rate, seconds, work), offered(max(1, rate // 10), seconds, live))
    return [summary(call, *measured, rate),
            summary("GET /live (raw baseline)", *baseline, max(1, rate // 10))]


def probe(base_url: str, call: str, rate: int, seconds: float, barcodes: list[str],
          desk: dict[str, str], admin: dict[str, str]) -> list[dict[str, object]]:
    """`under_load` in a process of its own (the bench's own loop is busy with the load)."""
    return asyncio.run(under_load(base_url, call, rate, seconds, barcodes, desk=desk,
                                  admin=admin))
