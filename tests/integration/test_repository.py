"""One suite, two implementations: the in-memory fake repository behaves as the SQL one.

Handler unit tests run on tests/fakes.py; this keeps the fake honest against Postgres.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
from sqlalchemy import event, func, text
from sqlmodel import col, select

from services.circulation.models import Anomaly, Item, Site, Transfer
from services.circulation.spec import SPEC
from shared.contracts import utcnow
from shared.contracts.circulation import ItemCheckedIn
from shared.messaging.outbox import ServiceContext
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


# --- tables written in bulk (Row.inserted_in_bulk): the same contract as any other -------

def _transfer(transfer_id: str, barcode: str, status: str = "open") -> Transfer:
    return Transfer(transfer_id=transfer_id, barcode=barcode, from_site="JX-A", to_site="JX-B",
                    reason="return_home", status=status, requested_at=utcnow())


async def test_bulk_rows_are_found_by_key_and_kept_with_later_changes(open_uow: Opener) -> None:
    assert Transfer.inserted_in_bulk and not Item.inserted_in_bulk
    async with open_uow() as uow:
        uow.repo(Transfer).add(_transfer("T1", "BK1"))
        found = await uow.repo(Transfer).get("T1")
        assert found is not None
        found.status = "completed"  # changed before the unit of work wrote it
        uow.repo(Transfer).add(_transfer("T-gone", "BK9"))
        gone = await uow.repo(Transfer).get("T-gone")
        assert gone is not None
        await uow.repo(Transfer).remove(gone)
    async with open_uow() as uow:
        await uow.repo(Transfer).load(["T1", "T-gone"])
        kept = await uow.repo(Transfer).get("T1")
        assert kept is not None and kept.status == "completed" and kept.barcode == "BK1"
        assert await uow.repo(Transfer).get("T-gone") is None


@pytest.fixture
async def sql_ctx(infra: Infra) -> AsyncIterator[ServiceContext]:
    async with migrated_context(SPEC, await new_env(infra)) as ctx:
        yield ctx


async def _transfers(ctx: ServiceContext) -> dict[str, str]:
    async with ctx.sessionmaker() as session:
        rows = (await session.execute(text(
            "SELECT transfer_id, status FROM circulation.transfer"))).all()
    return {r[0]: r[1] for r in rows}


async def test_a_query_in_the_middle_sees_bulk_rows_and_later_changes_are_flushed(
    sql_ctx: ServiceContext,
) -> None:
    """A query written by hand finds the rows added before it; a row written for it is
    then tracked like any other, so a change made after the query is kept too."""
    async with SqlUnitOfWork(sql_ctx) as uow:
        transfer = _transfer("T2", "BK2")
        uow.repo(Transfer).add(transfer)
        seen = (await uow.session.exec(select(Transfer.transfer_id).where(
            col(Transfer.barcode) == "BK2"))).all()
        assert seen == ["T2"]
        transfer.status = "cancelled"
    assert await _transfers(sql_ctx) == {"T2": "cancelled"}


async def test_bulk_rows_are_written_after_the_updates_of_the_same_flush(
    sql_ctx: ServiceContext,
) -> None:
    """Closing an item's open transfer and opening a new one in one unit of work: the
    partial unique index (one open transfer per item) sees the close first."""
    async with SqlUnitOfWork(sql_ctx) as uow:
        uow.repo(Transfer).add(_transfer("T3", "BK3"))
    async with SqlUnitOfWork(sql_ctx) as uow:
        await uow.repo(Transfer).load(["T3"])
        old = await uow.repo(Transfer).get("T3")
        assert old is not None
        old.status = "cancelled"
        uow.repo(Transfer).add(_transfer("T4", "BK3"))
        uow.repo(Item).add(Item(barcode="BK3", site="JX-A", status="in_transit",
                                open_transfer_id="T4"))
        # Rows of two bulk tables and an event: one statement with WITH parts.
        uow.repo(Anomaly).add(Anomaly(barcode="BK3", kind="checkin_without_loan",
                                      detail="-", event_id="e-3", at=utcnow(), site="JX-A"))
        uow.emit(ItemCheckedIn(barcode="BK3", branch="JX-A", disposition="transfer"),
                 subject="BK3")
    assert await _transfers(sql_ctx) == {"T3": "cancelled", "T4": "open"}
    async with sql_ctx.sessionmaker() as session:
        written = (await session.execute(text(
            "SELECT (SELECT count(*) FROM circulation.anomaly WHERE barcode = 'BK3'), "
            "(SELECT count(*) FROM circulation.outbox WHERE key = 'BK3'::bytea)"))).one()
    assert tuple(written) == (1, 1)


async def test_bulk_rows_alone_commit_and_a_failed_unit_of_work_writes_none(
    sql_ctx: ServiceContext,
) -> None:
    async with SqlUnitOfWork(sql_ctx) as uow:  # nothing else: no ORM change, no event
        uow.repo(Anomaly).add(Anomaly(barcode="BK5", kind="unknown_item", detail="-",
                                      event_id="e-5", at=utcnow(), site="JX-A"))
    with pytest.raises(RuntimeError):
        async with SqlUnitOfWork(sql_ctx) as uow:
            uow.repo(Transfer).add(_transfer("T6", "BK6"))
            await uow.session.execute(text("SELECT 1"))  # written in the middle ...
            raise RuntimeError("handler failed")  # ... and rolled back with the rest
    async with sql_ctx.sessionmaker() as session:
        anomalies = (await session.execute(select(func.count()).select_from(Anomaly)
                                           )).scalar_one()
    assert anomalies == 1 and await _transfers(sql_ctx) == {}
