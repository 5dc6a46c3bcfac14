"""Composition of the logistics service."""

from __future__ import annotations

from pathlib import Path

from services.logistics import api, consumers
from services.logistics.models import SCHEMA, TABLES
from shared.service import ServiceSpec, build_app


def spec() -> ServiceSpec:
    return ServiceSpec(
        name=SCHEMA,
        tables=TABLES,
        migrations_dir=Path(__file__).parent / "migrations",
        consumes=consumers.TOPICS,
        handlers=consumers.HANDLERS,
        prefetch=consumers.prefetch,
        routers=[api.router],
        title="Branchline logistics",
        description="How items move: the network's sites, shipments and drivers' scans.",
    )


def create_app():  # type: ignore[no-untyped-def]
    return build_app(spec())
