"""The outbox's move from a rewritten `published_at` to the `outbox_unpublished` ids: an
existing database keeps exactly its unpublished rows queued, and every service's migrated
schema is what its tables declare."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, MetaData, text
from sqlmodel import SQLModel

from services.acquisition.spec import SPEC as ACQUISITION
from services.cataloging.spec import SPEC as CATALOGING
from services.circulation.spec import SPEC as CIRCULATION
from services.logistics.spec import SPEC as LOGISTICS
from shared.messaging.outbox import outbox_tables
from shared.service.app import ServiceSpec
from shared.service.db import alembic_config, make_engine
from tests.support import Infra, new_env

pytestmark = pytest.mark.integration

SPECS = [ACQUISITION, CATALOGING, CIRCULATION, LOGISTICS]


def _revision_before_unpublished(spec: ServiceSpec) -> str:
    for path in spec.migrations_dir.glob("*_outbox_unpublished_ids.py"):
        for line in path.read_text().splitlines():
            if line.startswith("down_revision"):
                return line.split("'")[1]
    raise AssertionError(f"{spec.name} has no outbox_unpublished_ids revision")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
async def test_unpublished_rows_stay_queued_across_the_migration(infra: Infra,
                                                                 spec: ServiceSpec) -> None:
    settings = await new_env(infra)
    engine = make_engine(settings.database_url, 1)
    s = spec.name
    url = engine.url.render_as_string(hide_password=False)
    cfg = alembic_config(spec.migrations_dir, url, s)

    def to(revision: str) -> Any:
        def run(sync_conn: Connection) -> None:
            cfg.attributes["connection"] = sync_conn
            if revision == "-1":
                command.downgrade(cfg, revision)
            else:
                command.upgrade(cfg, revision)
        return run

    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{s}"'))
            await conn.run_sync(to(_revision_before_unpublished(spec)))
            await conn.execute(text(
                f'INSERT INTO "{s}".outbox (topic, key, value, event_type, published_at) '
                "VALUES ('t', 'a', 'sent', 'e', now()), ('t', 'b', 'queued-1', 'e', NULL), "
                "('t', 'c', 'queued-2', 'e', NULL)"))
            await conn.run_sync(to("head"))
            queued = (await conn.execute(text(
                f'SELECT o.value FROM "{s}".outbox o JOIN "{s}".outbox_unpublished u '
                "USING (id) ORDER BY id"))).scalars().all()
            assert queued == [b"queued-1", b"queued-2"]
            kept = (await conn.execute(text(f'SELECT count(*) FROM "{s}".outbox'))).scalar_one()
            assert kept == 3

            def differences(sync_conn: Connection) -> list[Any]:
                md = MetaData()
                outbox_tables(s)
                for table in SQLModel.metadata.tables.values():
                    if table.schema == s:
                        table.to_metadata(md)
                ctx = MigrationContext.configure(sync_conn, opts={
                    "include_schemas": True,
                    "include_name": lambda name, type_, parent: type_ != "schema" or name == s,
                    "include_object": lambda obj, name, type_, reflected, compare_to: (
                        type_ != "table" or getattr(obj, "schema", None) == s),
                })
                return [d for d in compare_metadata(ctx, md)
                        if "outbox" in repr(d)]
            assert await conn.run_sync(differences) == []

            await conn.run_sync(to("-1"))  # and back: published_at again, NULL where queued
            back = (await conn.execute(text(
                f'SELECT value, published_at IS NULL FROM "{s}".outbox ORDER BY id'))).all()
            assert [tuple(r) for r in back] == [(b"sent", False), (b"queued-1", True),
                                                (b"queued-2", True)]
            await conn.rollback()
    finally:
        await engine.dispose()
