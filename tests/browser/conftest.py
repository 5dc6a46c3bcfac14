"""The staff pages in a real browser: Debian's Chromium driven by Playwright, against the
four services and the web front end as separate processes on the real broker and Postgres.

BROWSER_TESTS=0 skips this layer, and says so in the summary; otherwise a missing
Chromium fails the run with how to install it (`make test` installs it where it can).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from devtools.infra import free_port
from devtools.stack import DEMO_NETWORK, Stack
from shared.contracts import SERVICES
from shared.service.db import make_engine
from tests.support import SIGNING_KEY, Infra, new_env, sites_known_everywhere, token
from web.users import save_user

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
#: Kept by CI as an artifact; the README shows two of them.
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
#: Chromium's own background traffic is refused by a closed network, many at a time.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]

#: One user per role: (user name, role, site, driver). The desk works at Haining.
DESK_SITE = "JX-HN-01"
USERS = {
    "acq": ("acquisitions", None, None),
    "cat": ("cataloger", None, None),
    "desk-hn": ("desk", DESK_SITE, None),
    "disp": ("dispatcher", None, None),
    "drv": ("driver", None, "D-01"),
    "boss": ("admin", None, None),
}
PASSWORD = "correct-horse-7"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)
            if os.environ.get("BROWSER_TESTS") == "0":
                item.add_marker(pytest.mark.skip(
                    reason="browser layer skipped on request (BROWSER_TESTS=0)"))


@dataclass
class Web:
    stack: Stack
    url: str
    http: httpx.AsyncClient

    def service(self, name: str) -> str:
        return self.stack.url(name)

    async def api(self, method: str, service: str, path: str, role: str = "admin",
                  body: Any = None, **kw: str) -> Any:
        r = await self.http.request(method, self.service(service) + path, json=body,
                                    headers=token(role, **kw))
        assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None


@pytest.fixture(scope="session")
async def web(infra: Infra) -> AsyncIterator[Web]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - once, before anything starts
        pytest.fail(f"Chromium is not at {CHROMIUM}: install it with `apt-get install chromium "
                    "fonts-noto-cjk` (as root; `make test` does this where it can), point "
                    "CHROMIUM at one, or skip the browser layer with BROWSER_TESTS=0",
                    pytrace=False)
    settings = await new_env(infra)
    logs = Path(tempfile.mkdtemp(prefix="branchline-web-"))
    stack = Stack(settings, logs, {name: free_port() for name in SERVICES}, logs, extra_env={
        "KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
        "BRANCHLINE_SIGNING_KEY": SIGNING_KEY,
        "CATALOG_AUTO_COMPLETE": "false",  # the cataloger completes items on the page
        "ROUTE_PLAN_AT": "",
        "LOG_LEVEL": "INFO",
    })
    stack.database_url = settings.database_url
    stack.kafka_bootstrap = settings.kafka_bootstrap_servers
    http = httpx.AsyncClient(timeout=30)
    try:
        for name in SERVICES:
            stack.start_service(name)
        stack.start_web(free_port())
        stack.wait_healthy(timeout=120)
        network = json.loads(DEMO_NETWORK.read_text())
        r = await http.post(stack.url("logistics") + "/network", json=network,
                            headers=token("admin"))
        assert r.status_code == 200, r.text
        await sites_known_everywhere(settings.database_url, len(network["sites"]))
        engine = make_engine(settings.database_url, pool_size=1)
        async with AsyncSession(engine, expire_on_commit=False) as session:
            for name, (role, site, driver) in USERS.items():
                await save_user(session, username=name, role=role, password=PASSWORD,
                                site=site, driver=driver, display_name=name)
        await engine.dispose()
        yield Web(stack, stack.url("web"), http)
    finally:
        await http.aclose()
        stack.stop()
        for name in [*SERVICES, "web"]:  # shown by pytest when a test failed
            print(f"--- {name} log tail ---\n{stack.tail(name, 30)}")
        shutil.rmtree(logs, ignore_errors=True)


@pytest.fixture(scope="session")
async def browser(web: Web) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def new_page(browser: Any, web: Web, *, phone: bool = False, lang: str = "zh") -> Any:
    """A fresh browser context (its own cookies) at desktop or phone size."""
    context = await browser.new_context(
        viewport=PHONE if phone else DESKTOP, base_url=web.url, locale="zh-CN",
        is_mobile=phone, has_touch=phone, device_scale_factor=2 if phone else 1)
    await context.add_cookies([{"name": "lang", "value": lang, "url": web.url}])
    page = await context.new_page()
    page.set_default_timeout(20_000)
    page.on("response", _record_server_time)
    return page


#: Server time of every page (document) the tests opened, by path: written to
#: artifacts/page-times.md at the end (a record of what the pages cost, not a check).
PAGE_TIMES: dict[str, list[float]] = {}


def _record_server_time(response: Any) -> None:
    if response.request.resource_type != "document":
        return
    timing = response.headers.get("server-timing", "")
    if timing.startswith("app;dur="):
        path = re.sub(r"/JX[-\w]+|/[0-9a-f-]{32,36}|\d{4}-\d\d-\d\d", "/…",
                      urlsplit(response.url).path)
        PAGE_TIMES.setdefault(path, []).append(float(timing.removeprefix("app;dur=")))


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not PAGE_TIMES:
        return
    lines = ["| page | loads | p50 ms | p95 ms | max ms |", "|---|---|---|---|---|"]
    for path, times in sorted(PAGE_TIMES.items()):
        ordered = sorted(times)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        lines.append(f"| `{path}` | {len(times)} | {statistics.median(times):.1f} | "
                     f"{p95:.1f} | {ordered[-1]:.1f} |")
    SCREENSHOTS.parent.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS.parent / "page-times.md").write_text(
        "Server time of each page the browser tests opened (Server-Timing)\n\n"
        + "\n".join(lines) + "\n")


async def sign_in(page: Any, username: str, password: str = PASSWORD) -> None:
    await page.goto("/signin")
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await page.wait_for_load_state("networkidle")


async def shot(page: Any, name: str) -> Path:
    """A full-page screenshot under artifacts/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
