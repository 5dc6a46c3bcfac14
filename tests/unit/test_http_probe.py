"""The bench's HTTP probe: what it counts, and that it tells its own stalls apart."""

from __future__ import annotations

import asyncio
import json
import time

from devtools.bench.http_probe import under_load


async def _server(block_ms: float, posted: list[str] | None = None,
                  ) -> tuple[asyncio.Server, str]:
    """A tiny HTTP/1.1 server: 202 to POST (its barcode noted in `posted`), 200 to GET;
    the first GET /live blocks this loop (the one the probe also runs on) for `block_ms`,
    as a stalled client would."""
    blocked = False

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal blocked
        while line := await reader.readline():
            method, path = line.split()[:2]
            length = 0
            while (header := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = header.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            if method == b"POST" and posted is not None:
                posted.append(json.loads(body)["subject"])
            if path == b"/live" and not blocked and block_ms:
                blocked = True
                time.sleep(block_ms / 1000)  # noqa: ASYNC251 - the stall is the point
            status = b"202 Accepted" if method == b"POST" else b"200 OK"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def test_the_probe_counts_each_call_and_reports_its_own_loop_lag() -> None:
    posted: list[str] = []
    server, url = await _server(block_ms=120, posted=posted)
    try:
        post, live = await under_load(url, "POST /branch-events", 40, 0.5,
                                      [f"B{i}" for i in range(40)],
                                      desk={"Authorization": "x"}, admin={})
    finally:
        server.close()
    assert (post["call"], post["ok"], post["errors"]) == ("POST /branch-events", 20, 0)
    assert post["warm_up_calls"] == 20  # sent before, on the spare barcodes, not counted
    assert sorted(posted[:20]) == sorted(f"B{i}" for i in range(20, 40))
    assert sorted(posted[20:]) == sorted(f"B{i}" for i in range(20))
    assert live["call"] == "GET /live (raw baseline)" and live["ok"] == 2
    # The 120 ms stall was the client's own loop: it shows in the client's lag.
    assert isinstance(post["client_loop_lag_max_ms"], float)
    assert post["client_loop_lag_max_ms"] >= 100


async def test_a_refused_call_is_an_error_not_a_latency() -> None:
    server, url = await _server(block_ms=0)
    try:
        [get, _] = await under_load(url, "GET /items/{barcode}", 20, 0.5, ["B1"],
                                    desk={}, admin={})
    finally:
        server.close()
    assert (get["ok"], get["errors"]) == (10, 0)
    server, url = await _server(block_ms=0)
    server.close()
    await server.wait_closed()
    [get, live] = await under_load(url, "GET /items/{barcode}", 20, 0.5, ["B1"],
                                   desk={}, admin={})
    assert (get["ok"], get["errors"], live["ok"]) == (0, 10, 0)
