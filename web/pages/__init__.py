"""The pages of each role, one module each; ROUTERS is what web.app mounts."""

from __future__ import annotations

from fastapi import APIRouter

from web.pages import acquisitions, cataloging, desk, dispatch, driver, report

ROUTERS: list[APIRouter] = [m.router for m in (acquisitions, cataloging, desk, dispatch,
                                               driver, report)]
