"""One suite, two implementations: the in-memory fake repository behaves as the SQL one.

Handler unit tests run on tests/fakes.py; this keeps the fake honest against Postgres.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
from sqlalchemy import event

from services.circulation.models import Item, Site
from services.circulation.spec import SPEC
from shared.messaging.unit_of_work import SqlUnitOfWork, UnitOfWork
from tests.fakes import FakeUnitOfWork
from tests.support import Infra, migrated_context, new_env

pytestmark = pytest.mark.integration

Opener = Callable[[], AbstractAsyncContextManager[UnitOfWork]]


@pytest.fixture(params=["fake", "sql"])
async def open_uow(request: pytest.FixtureRequest, infra: Infra) -> AsyncIterator[Opener]:
    """Opens successive units of work over one store (dicts, or one Postgres schema)."""
    if request.param == "fake":
        fake = FakeUnitOfWork("circulation")

        @asynccontextmanager
        async def open_fake() -> AsyncIterator[UnitOfWork]:
            yield fake

        yield open_fake
        return
    async with migrated_context(SPEC, await new_env(infra)) as ctx:

        @asynccontextmanager
        async def open_sql() -> AsyncIterator[UnitOfWork]:
            async with SqlUnitOfWork(ctx) as uow:
                yield uow

        yield open_sql


async def test_added_rows_are_found_by_key_and_by_field(open_uow: Opener) -> None:
    async with open_uow() as uow:
        assert await uow.repo(Item).get("R1") is None
        uow.repo(Item).add(Item(barcode="R1", owning_branch="JX-A", site="JX-A",
                                status="available"))
        uow.repo(Item).add(Item(barcode="R2", owning_branch="JX-B", site="JX-B",
                                status="available"))
        found = await uow.repo(Item).get("R1")
        assert found is not None and found.owning_branch == "JX-A"
    async with open_uow() as uow:
        await uow.repo(Item).load(["R1", "R2", "R-missing"])
        assert await uow.repo(Item).get("R-missing") is None
        second = await uow.repo(Item).get("R2")
        assert second is not None and second.site == "JX-B"
        by_owner = await uow.repo(Item).find("owning_branch", ["JX-A", "JX-Z"])
        assert list(by_owner) == ["JX-A"] and by_owner["JX-A"].barcode == "R1"
        assert await uow.repo(Item).find("owning_branch", []) == {}


async def test_changes_to_a_row_are_kept(open_uow: Opener) -> None:
    async with open_uow() as uow:
        uow.repo(Item).add(Item(barcode="R3", site="JX-A", status="available"))
    async with open_uow() as uow:
        item = await uow.repo(Item).get("R3")
        assert item is not None
        item.status = "on_loan"
    async with open_uow() as uow:
        item = await uow.repo(Item).get("R3")
        assert item is not None and item.status == "on_loan"


async def test_put_inserts_then_replaces(open_uow: Opener) -> None:
    async with open_uow() as uow:
        await uow.repo(Site).put(Site(code="S1", name="Old", kind="town"))
    async with open_uow() as uow:
        await uow.repo(Site).put(Site(code="S1", name="New", kind="town", floating_group="g"))
    async with open_uow() as uow:
        site = await uow.repo(Site).get("S1")
        assert site is not None and (site.name, site.floating_group) == ("New", "g")


async def test_sql_lookups_by_field_ask_the_database_once_per_value(infra: Infra) -> None:
    """A batch's prefetch finds rows (and misses) once; handlers then ask without a query."""
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    async with migrated_context(SPEC, await new_env(infra)) as ctx:
        event.listen(ctx.sessionmaker.kw["bind"].sync_engine, "before_cursor_execute", count)
        async with SqlUnitOfWork(ctx) as uow:
            uow.repo(Item).add(Item(barcode="Q1", owning_branch="JX-A", status="available"))
        async with SqlUnitOfWork(ctx) as uow:
            items = uow.repo(Item)
            await items.find("owning_branch", ["JX-A", "JX-NONE"], lock=True)
            assert len(statements) == 1 and "FOR UPDATE" in statements[0]
            assert (await items.get_by("owning_branch", "JX-A")) is not None
            assert await items.get_by("owning_branch", "JX-NONE") is None  # miss remembered
            items.add(Item(barcode="Q2", owning_branch="JX-NEW", status="available"))
            added = await items.get_by("owning_branch", "JX-NEW")
            assert added is not None and added.barcode == "Q2"  # found without asking
            assert len(statements) == 1


async def test_a_lookup_of_more_values_than_postgres_takes_parameters_is_one_query(
    infra: Infra,
) -> None:
    """40,000 keys (a big import's ISBNs) go as one array, past the 32,767-parameter cap."""
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    async with migrated_context(SPEC, await new_env(infra)) as ctx:
        async with SqlUnitOfWork(ctx) as uow:
            for n in (7, 39_999):
                uow.repo(Item).add(Item(barcode=f"K{n}", owning_branch=f"JX-{n}"))
        event.listen(ctx.sessionmaker.kw["bind"].sync_engine, "before_cursor_execute", count)
        async with SqlUnitOfWork(ctx) as uow:
            items = uow.repo(Item)
            await items.load([f"K{n}" for n in range(40_000)], lock=True)
            found = await items.find("owning_branch", [f"JX-{n}" for n in range(40_000)])
            assert sorted(found) == ["JX-39999", "JX-7"]
            assert (await items.get("K7")) is not None and await items.get("K8") is None
            assert len(statements) == 2
