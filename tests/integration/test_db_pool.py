"""The connection pool against a real Postgres: a connection the server closed is not
handed out again."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from services.circulation.spec import SPEC
from shared.service.app import Service
from shared.service.db import make_engine
from tests.support import Infra, new_env

pytestmark = pytest.mark.integration


async def _terminate(url: str, pid: int) -> None:
    other = create_async_engine(url)
    try:
        async with other.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await other.dispose()


async def _backend_after_termination(url: str, *, checked: bool) -> int:
    engine = (make_engine(url, pool_size=1) if checked
              else create_async_engine(url, pool_size=1, max_overflow=0))
    try:
        async with engine.connect() as conn:
            first = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await _terminate(url, first)
        await asyncio.sleep(0.3)  # the server's goodbye reaches the pooled socket
        async with engine.connect() as conn:
            second = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert second != first
        return int(second)
    finally:
        await engine.dispose()


async def test_a_connection_the_server_closed_is_replaced_at_checkout(infra: Infra) -> None:
    """The pool's own check (no ping round trip) gives a new connection, not an error."""
    await _backend_after_termination(infra.database_url, checked=True)


async def test_without_the_check_the_closed_connection_fails_its_first_statement(
        infra: Infra) -> None:
    """What the check prevents: a plain pool hands out the dead connection."""
    with pytest.raises(DBAPIError):
        await _backend_after_termination(infra.database_url, checked=False)


async def test_read_sessions_run_each_statement_alone_and_the_pool_gets_transactions_back(
    infra: Infra,
) -> None:
    """`ReadSessionDep`'s sessions send no BEGIN: each statement is its own transaction
    (`now()` moves between two), while a plain session's statements share one; the same
    pooled connection is a plain transaction again once handed back."""
    service = Service(SPEC, await new_env(infra, db_pool_size=1))
    try:
        async with service.read_sessionmaker() as session:
            first = (await session.execute(text("SELECT now()"))).scalar_one()
            await asyncio.sleep(0.05)
            second = (await session.execute(text("SELECT now()"))).scalar_one()
            assert second > first
        async with service.ctx.sessionmaker() as session:
            first = (await session.execute(text("SELECT now()"))).scalar_one()
            await asyncio.sleep(0.05)
            second = (await session.execute(text("SELECT now()"))).scalar_one()
            assert second == first
    finally:
        await service.engine.dispose()
