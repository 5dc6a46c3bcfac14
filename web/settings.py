"""What the web front end reads from the environment (pydantic-settings)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.service.settings import DEFAULT_PORTS, Settings

#: The staff pages' port: one below the services' (acquisition 8101 ... logistics 8104).
DEFAULT_WEB_PORT = 8100


class WebSettings(Settings):
    """The services' settings plus where their HTTP APIs are and the pages' defaults."""

    web_port: int = DEFAULT_WEB_PORT
    acquisition_url: str = f"http://127.0.0.1:{DEFAULT_PORTS['acquisition']}"
    cataloging_url: str = f"http://127.0.0.1:{DEFAULT_PORTS['cataloging']}"
    circulation_url: str = f"http://127.0.0.1:{DEFAULT_PORTS['circulation']}"
    logistics_url: str = f"http://127.0.0.1:{DEFAULT_PORTS['logistics']}"
    #: Chinese by default for a Jiaxing install; each user can switch.
    web_language: Literal["zh", "en"] = "zh"
    #: Secure cookies (HTTPS only); off for a local `make run` on http://127.0.0.1.
    web_secure_cookies: bool = False
    #: How long a sign-in lasts without use.
    web_session_hours: float = Field(default=12.0, gt=0)

    def service_url(self, service: str) -> str:
        url: str = getattr(self, f"{service}_url")
        return url.rstrip("/")


def load_web_settings() -> WebSettings:
    return WebSettings()
