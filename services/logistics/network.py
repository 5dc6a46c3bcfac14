"""Loading a network file without the HTTP app (`branchline network load FILE`).

The sites, vehicles and drivers and their events commit in one transaction into the
logistics schema's outbox; the logistics service's relay publishes them (right away if it
is running, or as soon as it starts).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.logistics.handlers import NetworkCounts, load_network
from services.logistics.models import SCHEMA
from shared.messaging.outbox import ServiceContext, outbox_tables
from shared.messaging.unit_of_work import SqlUnitOfWork
from shared.service.db import make_engine, make_sessionmaker, migrate, wait_for_database
from shared.service.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"
DEMO_NETWORK = Path(__file__).parent / "data" / "demo_network.json"
#: A network of Jiaxing's size: 265 library sites, 12 vans, 2 book vans.
REFERENCE_NETWORK = Path(__file__).parent / "data" / "jiaxing_network.json"


def read_network_file(path: Path) -> Any:
    """The parsed JSON of a network file; ValueError says why it isn't one."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc


async def load_network_file(path: Path, settings: Settings) -> NetworkCounts:
    """Validate and load the network file at `path`; return how many sites, vehicles and
    drivers it upserted.

    Raises domain.InvalidNetwork (naming each bad site and field) or ValueError (not
    JSON). Brings the logistics schema up to date first, so it works before the service
    has ever started.
    """
    document = read_network_file(path)
    engine = make_engine(settings.db_url_for(SCHEMA), pool_size=1)
    try:
        await wait_for_database(engine)
        await migrate(engine, MIGRATIONS, SCHEMA)
        ctx = ServiceContext(SCHEMA, outbox_tables(SCHEMA), make_sessionmaker(engine),
                             settings=settings)
        async with SqlUnitOfWork(ctx) as uow:
            return await load_network(uow, document)
    finally:
        await engine.dispose()
