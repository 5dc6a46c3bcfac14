"""The pages of each role, one module each; ROUTERS is what web.app mounts."""

from __future__ import annotations

from fastapi import APIRouter

ROUTERS: list[APIRouter] = []
