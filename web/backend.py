"""Calls to the four services' HTTP APIs on behalf of the signed-in user: each request
carries a short-lived token for the user's role (and site or driver), minted here with the
network's signing key. The pages never read a service's database."""

from __future__ import annotations

from typing import Any

import httpx

from shared.service.auth import issue_token
from web.models import StaffUser
from web.settings import WebSettings


class BackendError(Exception):
    """A service refused or failed a call: its status and its own words (problem detail)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):  # 422: one entry per field
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
                         for d in detail if isinstance(d, dict))
    return str(detail)


class Backend:
    """One user's view of the services."""

    def __init__(self, client: httpx.AsyncClient, settings: WebSettings, key: str,
                 user: StaffUser) -> None:
        self.client, self.settings, self.key, self.user = client, settings, key, user

    def token(self) -> str:
        u = self.user
        return issue_token(u.role, site=u.site, driver=u.driver, key=self.key, ttl_days=1,
                           subject=u.username)

    async def call(self, service: str, method: str, path: str, *, ok: tuple[int, ...] = (),
                   **kwargs: Any) -> Any:
        """The JSON answer; BackendError for any status outside 2xx and `ok`."""
        url = self.settings.service_url(service) + path
        try:
            r = await self.client.request(method, url, headers={
                "Authorization": f"Bearer {self.token()}"}, **kwargs)
        except httpx.HTTPError as exc:
            raise BackendError(503, f"{service} is not answering ({exc.__class__.__name__}); "
                                    "try again in a moment") from exc
        if r.status_code >= 400 and r.status_code not in ok:
            raise BackendError(r.status_code, _detail(r))
        if not r.content:
            return None
        if r.headers.get("content-type", "").startswith(("application/json",
                                                          "application/problem+json")):
            return r.json()
        return r.text

    async def get(self, service: str, path: str, **params: Any) -> Any:
        return await self.call(service, "GET", path,
                               params={k: v for k, v in params.items() if v is not None})

    async def post(self, service: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        return await self.call(service, "POST", path, json=body, **kwargs)
