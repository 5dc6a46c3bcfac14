"""Composition of the circulation service."""

from __future__ import annotations

from pathlib import Path

from services.circulation import api, consumers
from services.circulation.models import SCHEMA, TABLES
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
        title="Branchline circulation",
        description="Where every item is and should be: check-ins, check-outs, transfers.",
    )


def create_app():  # type: ignore[no-untyped-def]
    return build_app(spec())
