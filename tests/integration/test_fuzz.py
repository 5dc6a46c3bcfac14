"""schemathesis against each service's OpenAPI, in process, on the real broker and Postgres.

For every operation schemathesis generates valid and invalid requests (a handful of each on
the default budget; `FUZZ_EXAMPLES=N` for more; a fresh seed each run, `FUZZ_SEED=S` to
replay the one a failure names), each sent
with a token of one role in turn, or none. No answer may be a server error, and every 4xx
must be a problem response whose `detail` names the bad field (422), the limit (413), or
says in a sentence what is wrong.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from services.acquisition.spec import SPEC as ACQUISITION
from services.cataloging.spec import SPEC as CATALOGING
from services.circulation.spec import SPEC as CIRCULATION
from services.logistics.spec import SPEC as LOGISTICS
from shared.service.app import ServiceSpec, build_app
from tests.support import Infra, new_env, token

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))
SEED = int(os.environ.get("FUZZ_SEED") or random.randrange(2**32))
BASE_URL = "http://svc"
IDENTITIES: list[tuple[str, dict[str, str]]] = [
    ("admin", token("admin")),
    ("acquisitions", token("acquisitions")),
    ("cataloger", token("cataloger")),
    ("branch_system", token("branch_system", site="JX-HN-01")),
    ("desk", token("desk", site="JX-HN-01")),
    ("dispatcher", token("dispatcher")),
    ("driver", token("driver", driver="D-1")),
    ("anonymous", {}),
]
REQUEST_ARGS = {"method", "url", "headers", "files", "data", "params", "cookies", "json"}


def generated_cases(app: Any) -> list[Any]:
    """A handful of valid and of invalid requests for every operation of the app's OpenAPI."""
    schema = schemathesis.openapi.from_dict(app.openapi())
    cases: list[Any] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, count in ((GenerationMode.POSITIVE, EXAMPLES),
                            (GenerationMode.NEGATIVE, max(1, EXAMPLES // 2))):

            @seed(SEED)
            @hypothesis_settings(max_examples=count, database=None, deadline=None,
                                 phases=[Phase.generate], suppress_health_check=list(HealthCheck))
            @given(operation.as_strategy(generation_mode=mode))
            def collect(case: Any) -> None:
                cases.append(case)

            try:
                collect()
            except Unsatisfiable:
                pass  # nothing to make invalid (an operation without parameters or body)
    return cases


def on_the_wire(case: Any, identity: dict[str, str]) -> requests.PreparedRequest | None:
    """The request as bytes would carry it (None if no HTTP client could send it)."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL)
    kwargs = {k: v for k, v in kwargs.items() if k in REQUEST_ARGS}
    headers = {k: v for k, v in (kwargs.get("headers") or {}).items()
               if k.lower() != "authorization"}
    kwargs["headers"] = {**headers, **identity}
    try:
        return requests.Request(**kwargs).prepare()
    except (ValueError, TypeError, requests.RequestException):
        return None


def problems_in(response: httpx.Response) -> list[str]:
    """What is wrong with one answer (empty when it is fine)."""
    status = response.status_code
    if status >= 500:
        return [f"server error {status}: {response.text[:300]}"]
    if status < 400:
        return []
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return [f"{status} is not a problem response: {response.text[:200]}"]
    body = response.json()
    if not {"type", "title", "status", "detail"} <= body.keys() or body["status"] != status:
        return [f"{status} problem lacks members: {body}"]
    detail = body["detail"]
    if status == 422:
        if not isinstance(detail, list) or not detail:
            return [f"422 detail names no field: {detail!r}"]
        return [f"422 entry names no field: {entry!r}" for entry in detail
                if not isinstance(entry, dict) or not entry.get("loc") or not entry.get("msg")]
    if status == 413 and "bytes" not in str(detail):
        return [f"413 names no limit: {detail!r}"]
    if not isinstance(detail, str) or not detail.strip():
        return [f"{status} detail says nothing: {detail!r}"]
    return []


@asynccontextmanager
async def served(spec: ServiceSpec, settings: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The service started in this process; a server error comes back as a 500 answer."""
    app = build_app(spec, settings, configure_logging=False)
    service = app.state.service
    await service.start()
    try:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield app, client
    finally:
        await service.stop()


@pytest.mark.parametrize("spec", [ACQUISITION, CATALOGING, CIRCULATION, LOGISTICS],
                         ids=lambda s: s.name)
async def test_openapi_fuzz_finds_no_server_error(infra: Infra, spec: ServiceSpec) -> None:
    settings = await new_env(infra)
    async with served(spec, settings) as (app, client):
        cases = generated_cases(app)
        assert cases, "schemathesis generated nothing"
        failures: list[str] = []
        sent = 0
        for index, case in enumerate(cases):
            who, identity = IDENTITIES[index % len(IDENTITIES)]
            prepared = on_the_wire(case, identity)
            if prepared is None:
                continue
            try:
                response = await client.request(
                    str(prepared.method), str(prepared.url), headers=dict(prepared.headers),
                    content=prepared.body)
            except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeError):
                continue  # not sendable by an HTTP client either
            sent += 1
            failures += [f"{prepared.method} {prepared.url} as {who}: {p}"
                         for p in problems_in(response)]
        assert sent >= len(cases) // 2, f"only {sent} of {len(cases)} cases could be sent"
        assert not failures, f"FUZZ_SEED={SEED}:\n" + "\n".join(failures[:20])
