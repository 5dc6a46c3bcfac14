"""HTTP latency of circulation's desk calls at a steady offered rate (for `branchline bench`).

Open loop: a call is started every 1/rate s whatever the answers before it, so a slow
answer does not slow the sender (as desks and self-check machines do not wait for each
other). Beside the call, `GET /live` (no database, no token) is offered at a tenth of the
rate on the same process: the raw baseline of that process's event loop at that moment.
The client watches its own event loop too, so a stall of the client is told apart.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
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
        except (httpx.HTTPError, OSError):  # connection refused or cut: an error, not a crash
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


#: Calls sent (and not counted) before the measured ones: WARM_UP_RATE/s for WARM_UP_S s.
WARM_UP_RATE, WARM_UP_S = 20, 1.0


class Connections:
    """A small keep-alive HTTP/1.1 client on asyncio streams, for measuring only.

    httpx spends about a millisecond of CPU per request; at 200 requests/s on a machine
    whose cores the services already fill, the client then measures itself. This one
    writes the request and reads the status line, headers and `Content-Length` body:
    enough for the service's own answers, a fraction of the CPU.
    """

    def __init__(self, base_url: str) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, path: str, headers: dict[str, str],
                      body: bytes = b"") -> int:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        data = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{head}"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        # A kept connection the server has closed meanwhile (its keep-alive timeout) fails
        # at once; the request then goes once more on a new connection.
        while self.idle:
            status = await self._exchange(*self.idle.pop(), data)
            if status is not None:
                return status
        status = await self._exchange(*await asyncio.open_connection(self.host, self.port),
                                      data)
        if status is None:
            raise httpx.TransportError("connection lost")
        return status

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        data: bytes) -> int | None:
        try:
            writer.write(data)
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionResetError
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            status = int(status_line.split()[1])
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            writer.close()
            return None
        self.idle.append((reader, writer))
        return status

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def under_load(base_url: str, call: str, rate: int, seconds: float,
                     barcodes: list[str], *, desk: dict[str, str],
                     admin: dict[str, str]) -> list[dict[str, object]]:
    """`call` (a check-in posted, or an item looked up) at `rate`/s on one process, with
    `GET /live` beside it; each one's summary."""
    client = Connections(base_url)

    async def post_checkin(n: int) -> bool:
        status = await client.request("POST", "/branch-events",
                                      {**desk, "Content-Type": "application/json"},
                                      checkin(barcodes[n], "JX-PH-01"))
        return status == 202

    async def warm_checkin(n: int) -> bool:  # the spare barcodes at the end of the list
        return await post_checkin(len(barcodes) - 1 - n)

    async def lookup(n: int) -> bool:
        return await client.request("GET", f"/items/{barcodes[n % len(barcodes)]}",
                                    admin) == 200

    async def live(_: int) -> bool:
        return await client.request("GET", "/live", {}) == 200

    lags: list[float] = []

    async def own_lag() -> None:
        """How late this client's own loop wakes: a stall here is the client's, not the
        service's, and is reported beside the figures."""
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append((time.perf_counter() - started - 0.005) * 1000)

    watch = asyncio.create_task(own_lag())
    try:
        await offered(20, 0.5, live)  # open a few connections
        work = post_checkin if call.startswith("POST") else lookup
        # The process's first calls take its cold paths (validators and statements made on
        # first use); they are sent, not counted, as any latency measurement warms up.
        warm, _ = await offered(WARM_UP_RATE, WARM_UP_S,
                                warm_checkin if work is post_checkin else lookup)
        measured, baseline = await asyncio.gather(
            offered(rate, seconds, work), offered(max(1, rate // 10), seconds, live))
    finally:
        watch.cancel()
        client.close()
    client_lag = {"client_loop_lag_p99_ms": round(pct(lags, 99), 1),
                  "client_loop_lag_max_ms": round(max(lags, default=0.0), 1)}
    say(f"    (this client's own loop woke late by p99 {client_lag['client_loop_lag_p99_ms']} ms, "
        f"at most {client_lag['client_loop_lag_max_ms']} ms)")
    warm_up = {"warm_up_calls": len(warm), "warm_up_p99_ms": round(pct(warm, 99), 1)}
    say(f"    (before them, {len(warm)} {call} sent and not counted: p99 "
        f"{warm_up['warm_up_p99_ms']} ms)")
    return [summary(call, *measured, rate) | client_lag | warm_up,
            summary("GET /live (raw baseline)", *baseline, max(1, rate // 10)) | client_lag]


def probe(base_url: str, call: str, rate: int, seconds: float, barcodes: list[str],
          desk: dict[str, str], admin: dict[str, str]) -> list[dict[str, object]]:
    """`under_load` in a process of its own (the bench's own loop is busy with the load)."""
    return asyncio.run(under_load(base_url, call, rate, seconds, barcodes, desk=desk,
                                  admin=admin))
