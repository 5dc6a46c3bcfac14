"""The shared mechanics against the real broker and Postgres (circulation is the vehicle).

Outbox: only committed events are published. Inbox: a redelivered event has one effect.
Dead letters: unusable records land in dlq.<service> with the reason; the stream moves on.
Outage: while Postgres is down the batch is retried and its offsets are not committed.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, select, text

from services.circulation.models import Anomaly, Transfer
from services.circulation.spec import SPEC
from shared.contracts.branch import BranchCheckin
from shared.contracts.envelope import utcnow
from shared.messaging.kafka import make_producer
from shared.messaging.outbox import OutboxRelay
from shared.messaging.unit_of_work import SqlUnitOfWork
from shared.service import metrics
from shared.service.settings import Settings
from tests.support import (
    Infra,
    branch_event,
    events_of,
    eventually,
    item_cataloged,
    migrated_context,
    new_env,
    produce,
    read_topic,
    running_service,
)

pytestmark = pytest.mark.integration



async def test_relay_publishes_exactly_the_committed_events(infra: Infra) -> None:
    settings = await new_env(infra)
    async with migrated_context(SPEC, settings) as ctx:
        async with SqlUnitOfWork(ctx) as uow:
            uow.emit(BranchCheckin(branch="A", barcode="KEEP-1"), subject="KEEP-1")
            uow.emit(BranchCheckin(branch="A", barcode="KEEP-2"), subject="KEEP-2")
        with pytest.raises(RuntimeError):
            async with SqlUnitOfWork(ctx) as uow:
                uow.emit(BranchCheckin(branch="A", barcode="GONE-1"), subject="GONE-1")
                raise RuntimeError("the use case failed after emitting")

        producer = make_producer(settings, "test-relay")
        await producer.start()
        relay = OutboxRelay(ctx, producer, topic_prefix=settings.kafka_topic_prefix)
        try:
            assert await relay.drain_once() == 2
            # published rows are kept (for replay), marked published, never claimed again
            assert await relay.drain_once() == 0
            async with ctx.sessionmaker() as session:
                kept, unpublished = (await session.execute(text(
                    "SELECT (SELECT count(*) FROM circulation.outbox), "
                    "(SELECT count(*) FROM circulation.outbox_unpublished)"))).one()
            assert (kept, unpublished) == (2, 0)
        finally:
            await relay.stop()
            await producer.stop()
    records = await read_topic(settings, "branch.events", at_least=2, settle=2.0)
    assert sorted(r.key for r in records) == [b"KEEP-1", b"KEEP-2"]


async def test_a_unit_of_work_that_only_emits_writes_one_statement_without_a_transaction(
    infra: Infra, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Events alone go in one INSERT (no BEGIN/COMMIT); as soon as the unit of work read
    or changed anything, its events commit in its transaction with the state."""
    settings = await new_env(infra)
    async with migrated_context(SPEC, settings) as ctx:
        in_transaction: list[str] = []
        real = SqlUnitOfWork.flush_outbox

        async def spy(self: SqlUnitOfWork) -> int:
            in_transaction.extend(row["key"].decode() for row in self.queued_rows())
            return await real(self)

        monkeypatch.setattr(SqlUnitOfWork, "flush_outbox", spy)
        async with SqlUnitOfWork(ctx) as uow:
            uow.emit(BranchCheckin(branch="A", barcode="ALONE"), subject="ALONE")
        async with SqlUnitOfWork(ctx) as uow:
            await uow.session.execute(text("SELECT 1"))
            uow.emit(BranchCheckin(branch="A", barcode="AFTER-READ"), subject="AFTER-READ")
        async with SqlUnitOfWork(ctx) as uow:
            uow.repo(Anomaly).add(Anomaly(barcode="WITH-ROW", kind="unknown_item", detail="-",
                                          event_id="e-1", at=utcnow(), site="A"))
            uow.emit(BranchCheckin(branch="A", barcode="WITH-ROW"), subject="WITH-ROW")
        assert in_transaction == ["AFTER-READ", "WITH-ROW"]
        async with ctx.sessionmaker() as session:
            keys = (await session.execute(text(
                "SELECT key FROM circulation.outbox ORDER BY id"))).scalars().all()
            anomalies = (await session.execute(select(func.count()).select_from(Anomaly)
                                               )).scalar_one()
        assert keys == [b"ALONE", b"AFTER-READ", b"WITH-ROW"] and anomalies == 1


async def test_duplicate_delivery_has_one_effect(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await produce(settings, "cataloging.items", [item_cataloged("D1", "JX-A")])
        checkin = branch_event("branch.checkin", "JX-B", "D1")
        # the same event three times: twice in one batch, once later
        await produce(settings, "branch.events", [checkin, checkin])
        await asyncio.sleep(1.0)
        await produce(settings, "branch.events", [checkin])
        records = await read_topic(settings, "circulation.transfers", at_least=1, settle=3.0)
        assert len(events_of(records, "circulation.transfer_requested")) == 1
        async with client.service.ctx.sessionmaker() as session:
            count = (await session.execute(select(func.count()).select_from(Transfer))).scalar()
        assert count == 1


async def test_unusable_records_go_to_the_dead_letter_topic(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await produce(settings, "cataloging.items", [item_cataloged("G1", "JX-A")])
        missing = branch_event("branch.checkin", "JX-B", "X3")
        del missing["data"]["barcode"]
        unknown = branch_event("branch.checkin", "JX-B", "X2")
        unknown["type"] = "branch.teleported"
        await produce(settings, "branch.events", [(b"X1", b"{not json")])
        await produce(settings, "branch.events", [unknown, missing])
        good = branch_event("branch.checkin", "JX-B", "G1")
        await produce(settings, "branch.events", [good])

        dlq = await read_topic(settings, "dlq.circulation", at_least=3, settle=1.0)
        by_key = {r.key: dict(r.headers) for r in dlq}
        assert set(by_key) == {b"X1", b"X2", b"X3"}
        assert by_key[b"X1"]["error-type"] == b"not_json"
        assert by_key[b"X2"]["error-type"] == b"unknown_type"
        assert by_key[b"X3"]["error-type"] == b"invalid_data"
        assert b"data.barcode" in by_key[b"X3"]["error"]
        assert by_key[b"X1"]["original-topic"] == settings.topic("branch.events").encode()
        assert {"original-partition", "original-offset"} <= {k for k in by_key[b"X2"]}
        assert next(r.value for r in dlq if r.key == b"X1") == b"{not json"  # unchanged

        async def moved_on():
            r = await client.get("/items/G1", headers={"Authorization": "Bearer " + _admin()})
            return r.json()["status"] == "in_transit"

        await eventually(moved_on, what="the good record after the bad ones")


def _admin() -> str:
    from shared.service.auth import issue_token
    from tests.support import SIGNING_KEY

    return issue_token("admin", key=SIGNING_KEY)


async def _committed(settings: Settings, group: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        total = 0
        for p in range(4):
            offset = await consumer.committed(TopicPartition(settings.topic(topic), p))
            total += offset or 0
        return total
    finally:
        await consumer.stop()


async def test_database_outage_is_retried_and_offsets_not_committed(infra: Infra) -> None:
    if infra.postgres is None:
        pytest.skip("needs the embedded Postgres to stop and start it")
    settings = await new_env(infra)
    pg = infra.postgres
    async with running_service(SPEC, settings) as client:
        await produce(settings, "cataloging.items",
                      [item_cataloged(f"O{i}", "JX-A") for i in range(20)])

        async def registered():
            r = await client.get("/items/O19", headers={"Authorization": "Bearer " + _admin()})
            return r.status_code == 200

        await eventually(registered, what="items registered")
        retries_before = metrics.RETRIES.labels("circulation")._value.get()
        await asyncio.to_thread(pg.stop)
        try:
            await produce(settings, "branch.events",
                          [branch_event("branch.checkin", "JX-B", f"O{i}") for i in range(20)])

            async def retried():
                return metrics.RETRIES.labels("circulation")._value.get() >= retries_before + 2

            await eventually(retried, timeout=30, what="retries during the outage")
            group = settings.topic("circulation")
            assert await _committed(settings, group, "branch.events") == 0
        finally:
            await asyncio.to_thread(pg.start)
        records = await read_topic(settings, "circulation.transfers", at_least=20, timeout=60,
                                   settle=2.0)
        requested = events_of(records, "circulation.transfer_requested")
        assert sorted(e["data"]["barcode"] for e in requested) == sorted(f"O{i}" for i in range(20))

        async def committed_all():
            return await _committed(settings, settings.topic("circulation"), "branch.events") == 20

        await eventually(committed_all, what="offsets committed after recovery")
