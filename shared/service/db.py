"""Database setup: one async engine per service, its own schema, Alembic migrations.

Each service's tables live in a schema named after it; the service never touches another
schema. Migrations run at start-up under an advisory lock so N processes can start at once.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, MetaData, event, pool, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

log = logging.getLogger(__name__)

# SQLModel nudges towards `exec()` for ORM selects; the mechanics here run Core statements
# through `execute()` on purpose.
warnings.filterwarnings("ignore", message=r"(?s).*session\.exec\(\)", category=DeprecationWarning)


def make_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
    )
    event.listen(engine.sync_engine, "checkout", _closed_is_gone)
    return engine


def _closed_is_gone(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """A pooled connection the server closed (a restart, an idle timeout) is replaced at
    checkout, without a round trip.

    SQLAlchemy's `pool_pre_ping` asks the server on every checkout, and on asyncpg that is
    BEGIN, a query and ROLLBACK: three round trips before a desk's one-insert transaction.
    asyncpg reads every socket it holds, so a server's goodbye has already marked the
    connection closed by the time it is checked out; the pool then opens a new one. A
    connection cut without a goodbye fails its first statement, and SQLAlchemy then
    discards the whole pool (its disconnect handling).
    """
    driver = record.driver_connection
    if driver is not None and driver.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


#: The shared Alembic environment (env.py and the revision template).
MIGRATIONS_ENV = Path(__file__).parent / "migrations"


def alembic_config(versions_dir: Path, url: str, schema: str) -> Config:
    """Alembic for one service: the shared env, that service's revisions, its schema."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_ENV))
    cfg.set_main_option("version_locations", str(versions_dir))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["schema"] = schema
    return cfg


def run_migrations_online(metadata: MetaData, schema: str) -> None:
    """Body of the migrations env: upgrade one schema only."""
    from alembic import context

    cfg = context.config
    url = cfg.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("alembic config without sqlalchemy.url")

    def do_run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
            include_schemas=True,
            include_name=lambda name, type_, parent: (
                type_ != "schema" or name == schema
            ),
            include_object=lambda obj, name, type_, reflected, compare_to: (
                type_ != "table" or getattr(obj, "schema", None) == schema
            ),
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run_async() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        async with engine.connect() as conn:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await conn.commit()
            await conn.run_sync(do_run)
            await conn.commit()
        await engine.dispose()

    existing = cfg.attributes.get("connection")
    if existing is not None:
        do_run(existing)
    else:
        asyncio.run(run_async())


async def migrate(engine: AsyncEngine, versions_dir: Path, schema: str) -> None:
    """Bring the service's schema to head, one process at a time (advisory lock)."""
    url = engine.url.render_as_string(hide_password=False)
    cfg = alembic_config(versions_dir, url, schema)
    lock_id = zlib.crc32(f"branchline-migrate:{schema}".encode())

    def upgrade(sync_conn: Connection) -> None:
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, "head")

    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_id})
        try:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await conn.commit()
            await conn.run_sync(upgrade)
            await conn.commit()
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_id})
            await conn.commit()


async def wait_for_database(engine: AsyncEngine, timeout: float = 60.0,
                            on_retry: Callable[[Exception], None] | None = None) -> None:
    """Start-up waits for Postgres instead of crashing while it comes up."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return
        except Exception as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"database not reachable: {exc}") from exc
            if on_retry:
                on_retry(exc)
            await asyncio.sleep(0.5)
