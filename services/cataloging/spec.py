"""Composition of the cataloging service."""

from __future__ import annotations

from pathlib import Path

from services.cataloging import api, consumers
from services.cataloging.models import SCHEMA, TABLES
from shared.service import ServiceSpec, build_app
from shared.settings import Settings, load_settings


def spec(settings: Settings | None = None) -> ServiceSpec:
    """The service; `settings` (default: the environment's) names the processing center."""
    settings = settings or load_settings()
    return ServiceSpec(
        name=SCHEMA,
        tables=TABLES,
        migrations_dir=Path(__file__).parent / "migrations",
        consumes=consumers.TOPICS,
        handlers=consumers.make_handlers(settings.processing_site),
        prefetch=consumers.prefetch,
        routers=[api.router],
        title="Branchline cataloging",
        description="Bib records and items: received copies catalogued once, centrally; "
                    "one search across the network; MARC imports.",
    )


def create_app():  # type: ignore[no-untyped-def]
    settings = load_settings()
    return build_app(spec(settings), settings)
