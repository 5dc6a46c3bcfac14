"""All four services as separate processes, on the real embedded broker and Postgres."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from devtools.infra import free_port
from devtools.stack import DEMO_NETWORK, Stack
from shared.contracts import SERVICES
from shared.service.settings import Settings
from tests.support import SIGNING_KEY, Infra, new_env, sites_known_everywhere, token


class E2E:
    def __init__(self, stack: Stack, settings: Settings) -> None:
        self.stack = stack
        self.settings = settings
        self.http = httpx.AsyncClient(timeout=30)

    def url(self, service: str, path: str) -> str:
        return self.stack.url(service) + path

    async def get(self, service: str, path: str, role: str = "admin",
                  **kw: str) -> httpx.Response:
        return await self.http.get(self.url(service, path), headers=token(role, **kw))

    async def post(self, service: str, path: str, body: object, role: str = "admin",
                   **kw: str) -> httpx.Response:
        return await self.http.post(self.url(service, path), json=body, headers=token(role, **kw))


@pytest.fixture(scope="module")
async def system(infra: Infra) -> AsyncIterator[E2E]:
    settings = await new_env(infra)
    logs = Path(tempfile.mkdtemp(prefix="branchline-e2e-"))
    stack = Stack(
        settings, logs, {name: free_port() for name in SERVICES}, logs,
        extra_env={
            "KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
            "BRANCHLINE_SIGNING_KEY": SIGNING_KEY,
            "KAFKA_SESSION_TIMEOUT_MS": "2000",
            "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
            "ROUTE_PLAN_AT": "",  # routes are planned by the tests that mean to
            "LOG_LEVEL": "INFO",
        },
    )
    stack.database_url = settings.database_url
    stack.kafka_bootstrap = settings.kafka_bootstrap_servers
    e2e = E2E(stack, settings)
    try:
        for name in SERVICES:
            stack.start_service(name)
        stack.wait_healthy(timeout=90)
        network = json.loads(DEMO_NETWORK.read_text())
        r = await e2e.post("logistics", "/network", network)
        assert r.status_code == 200, r.text
        await sites_known_everywhere(settings.database_url, len(network["sites"]))
        yield e2e
    finally:
        await e2e.http.aclose()
        stack.stop()
        for name in SERVICES:  # shown by pytest when a test of this module failed
            print(f"--- {name} log tail ---\n{stack.tail(name, 30)}")
        shutil.rmtree(logs, ignore_errors=True)
