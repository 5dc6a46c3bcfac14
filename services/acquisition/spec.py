"""Composition of the acquisition service."""

from __future__ import annotations

from pathlib import Path

from services.acquisition import api, consumers
from services.acquisition.models import SCHEMA, TABLES
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
        title="Branchline acquisition",
        description="Buying for the whole network: vendors, funds, orders split across "
        "branches, and receiving.",
    )


def create_app():  # type: ignore[no-untyped-def]
    return build_app(spec())
