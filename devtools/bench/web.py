"""`branchline web bench`: the staff pages' server time on the demo data.

A fresh embedded Postgres and broker, the four services and the staff pages as separate
processes, the demo network and one user per role. Demo data: an order of 12 titles, 3
copies for three branches, opened and received (so cataloging has the titles, circulation
the copies on their way, logistics their shipments), and the day's routes planned. Then
each person's main pages are opened one request at a time, `--rounds` times each, through
a signed-in session. Reported per page: p50/p95/max of the server's own time
(`Server-Timing`) and of the whole request; the raw baseline from the same run is one
service call the pages make (logistics `GET /sites`) straight over HTTP. Results:
`devtools/bench/results/web.{json,md}`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from devtools.bench.run import bench_stack, machine, on_fresh_infra, pct, say, write_results
from devtools.infra import EmbeddedKafka, EmbeddedPostgres, free_port
from devtools.stack import DEMO_NETWORK
from devtools.staff import save_users
from shared.contracts import TOPICS
from shared.messaging.kafka import ensure_topics
from shared.service.auth import issue_token

RESULTS = Path(__file__).parent / "results"
PASSWORD = "bench-password-1"
USERS = {"acq": ("acquisitions", None, None), "cat": ("cataloger", None, None),
         "desk": ("desk", "JX-HN-01", None), "disp": ("dispatcher", None, None),
         "drv": ("driver", None, "D-01"), "boss": ("admin", None, None)}
BRANCHES = ["JX-HN-01", "JX-TX-01", "JX-HY-01"]
TITLES = ["围城", "平凡的世界", "活着", "白鹿原", "红楼梦", "三国演义", "边城", "骆驼祥子",
          "茶馆", "繁花", "三体", "呐喊"]


def driving_day() -> date:
    """Today in Jiaxing, or Monday when it is a Sunday (no van drives then)."""
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    return today + timedelta(days=1) if today.isoweekday() == 7 else today


def pages(day: date) -> dict[str, list[str]]:
    return {"acq": ["/acquisitions", "/acquisitions/receiving", "/acquisitions/orders/new"],
            "cat": ["/cataloging", f"/cataloging/search?q={TITLES[0]}", "/cataloging/imports"],
            "desk": ["/desk/JX-HN-01"],
            "disp": [f"/dispatch?date={day}"],
            "drv": [f"/driver?date={day}"],
            "boss": ["/report", "/admin/users"]}


def _isbn(n: int) -> str:
    first12 = f"97870200{n:04d}"
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
    return first12 + str((10 - total % 10) % 10)


async def seed(http: httpx.AsyncClient, url: dict[str, str], day: date) -> None:
    """The demo data: an order bought and received, the day's routes planned."""
    acq = {"Authorization": "Bearer " + issue_token("acquisitions")}
    vendor, fund = f"V-{uuid.uuid4().hex[:6]}", f"F-{uuid.uuid4().hex[:6]}"
    for path, body in (("/vendors", {"vendor_id": vendor, "name": "新华书店"}),
                       ("/funds", {"fund_code": fund, "name": "成人文学 2026",
                                   "budget": "100000.00", "currency": "CNY"})):
        (await http.post(url["acquisition"] + path, json=body, headers=acq)).raise_for_status()
    lines = [{"isbn": _isbn(n), "title": title, "unit_price": "38.50", "quantity": 3,
              "distribution": [{"branch": b, "copies": 1} for b in BRANCHES]}
             for n, title in enumerate(TITLES)]
    r = await http.post(url["acquisition"] + "/orders", headers=acq, json={
        "vendor_id": vendor, "fund_code": fund, "currency": "CNY", "lines": lines})
    r.raise_for_status()
    order_id = r.json()["order_id"]
    r = await http.post(url["acquisition"] + f"/orders/{order_id}/open", headers=acq)
    r.raise_for_status()
    received = [{"line_id": line["line_id"], "quantity": 3} for line in r.json()["lines"]]
    r = await http.post(url["acquisition"] + f"/orders/{order_id}/receipts", headers=acq,
                        json={"lines": received})
    r.raise_for_status()
    disp = {"Authorization": "Bearer " + issue_token("dispatcher")}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the copies travel: cataloging → circulation → logistics
        late = await http.get(url["logistics"] + "/shipments/late", params={"hours": 0},
                              headers=disp)
        if late.status_code == 200 and len(late.json()) >= len(TITLES) * 3:
            break
        await asyncio.sleep(1)
    r = await http.post(url["logistics"] + "/routes/plan", json={"date": day.isoformat()},
                        headers=disp, timeout=120)
    say(f"    order of {len(TITLES) * 3} copies received; routes planned for {day} "
        f"({r.status_code})")


async def signed_in(web_url: str, username: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=web_url, timeout=60)
    form = (await client.get("/signin")).text
    found = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert found, "no CSRF token on the sign-in form"
    r = await client.post("/signin", data={"username": username, "password": PASSWORD,
                                           "csrf_token": found.group(1), "next": "/"})
    if r.status_code != 303:
        raise SystemExit(f"sign-in of {username} failed: {r.status_code}")
    return client


async def time_pages(web_url: str, day: date, rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for username, paths in pages(day).items():
        client = await signed_in(web_url, username)
        try:
            for path in paths:
                server, total = [], []
                for _ in range(rounds):
                    t = time.perf_counter()
                    r = await client.get(path)
                    total.append((time.perf_counter() - t) * 1000)
                    if r.status_code != 200:
                        raise SystemExit(f"{path} as {username}: {r.status_code} {r.text[:300]}")
                    server.append(float(r.headers["server-timing"].removeprefix("app;dur=")))
                out[path.split("?")[0]] = {
                    "user": username, "requests": rounds,
                    "server_p50_ms": pct(server, 50), "server_p95_ms": pct(server, 95),
                    "server_max_ms": max(server), "request_p50_ms": pct(total, 50),
                    "request_p95_ms": pct(total, 95)}
                say(f"    {path}: server p50 {pct(server, 50):.1f} ms, "
                    f"p95 {pct(server, 95):.1f} ms")
        finally:
            await client.aclose()
    return out


async def measure(args: argparse.Namespace, pg: EmbeddedPostgres, kafka: EmbeddedKafka,
                  base: Path) -> dict[str, Any]:
    await ensure_topics(kafka.bootstrap, TOPICS, partitions=4)
    stack, _ = bench_stack(pg, kafka, base, {"LOG_LEVEL": "WARNING", "ROUTE_PLAN_AT": ""})
    day = driving_day()
    try:
        say("  starting the four services and the staff pages ...")
        for name in ("acquisition", "cataloging", "circulation", "logistics"):
            stack.start_service(name)
        stack.start_web(free_port())
        await asyncio.to_thread(stack.wait_healthy, 120)
        urls = {name: stack.url(name) for name in stack.ports}
        admin = {"Authorization": "Bearer " + issue_token("admin")}
        async with httpx.AsyncClient(timeout=60) as http:
            r = await http.post(urls["logistics"] + "/network", content=DEMO_NETWORK.read_bytes(),
                                headers={**admin, "content-type": "application/json"})
            r.raise_for_status()
            await save_users(pg.url, {name: (*who, PASSWORD) for name, who in USERS.items()})
            say("  demo data ...")
            await seed(http, urls, day)
            say("  raw baseline: logistics GET /sites ...")
            raw = []
            for _ in range(args.rounds):
                t = time.perf_counter()
                (await http.get(urls["logistics"] + "/sites", headers=admin)).raise_for_status()
                raw.append((time.perf_counter() - t) * 1000)
        say("  pages ...")
        timed = await time_pages(urls["web"], day, args.rounds)
    finally:
        await asyncio.to_thread(stack.stop)
    return {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
            "rounds": args.rounds, "day": day.isoformat(), "pages": timed,
            "raw_logistics_sites_p50_ms": pct(raw, 50),
            "raw_logistics_sites_p95_ms": pct(raw, 95)}


def render(result: dict[str, Any]) -> str:
    lines = [f"Staff pages bench — {result['when']} — {result['machine']}", "",
             f"Each page {result['rounds']} times, one request at a time, signed in as its "
             f"user; demo network, {len(TITLES) * 3} copies bought and received, routes of "
             f"{result['day']} planned. Server = the page's own time (Server-Timing).", "",
             "| page | user | server p50 ms | server p95 ms | server max ms "
             "| request p50 / p95 ms |", "|---|---|---|---|---|---|"]
    for path, p in result["pages"].items():
        lines.append(f"| `{path}` | {p['user']} | {p['server_p50_ms']:.1f} | "
                     f"{p['server_p95_ms']:.1f} | {p['server_max_ms']:.1f} | "
                     f"{p['request_p50_ms']:.1f} / {p['request_p95_ms']:.1f} |")
    lines += ["", f"Raw baseline (same run): logistics `GET /sites` straight over HTTP, p50 "
                  f"{result['raw_logistics_sites_p50_ms']:.1f} ms, p95 "
                  f"{result['raw_logistics_sites_p95_ms']:.1f} ms."]
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    result = on_fresh_infra("Staff pages bench",
                            lambda pg, kafka, base: measure(args, pg, kafka, base))
    write_results(RESULTS, "web", result, render(result))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=40, help="requests per page")
