"""Consumer faults on the real broker and Postgres: bad records never cost good ones, poison
is dead-lettered once (or parked), records are bound to their topic and subject, and two
replicas changing one item take turns.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from services.circulation.models import Item, Loan, Transfer
from services.circulation.spec import SPEC
from shared.contracts import Envelope, Event
from shared.messaging.consumer import (
    ByPartition,
    EventProcessor,
    Handlers,
    Incoming,
    _is_unique_violation,
)
from shared.messaging.outbox import ServiceContext
from shared.messaging.unit_of_work import SqlUnitOfWork, UnitOfWork
from tests.support import (
    Infra,
    branch_event,
    cloud_event,
    eventually,
    item_cataloged,
    new_env,
    produce,
    read_topic,
    running_service,
    token,
)

pytestmark = pytest.mark.integration


def _nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


async def test_bad_records_among_good_ones_cost_nothing(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        barcodes = [f"G{i:03d}" for i in range(200)]
        await produce(settings, "cataloging.items", [item_cataloged(b, "JX-A") for b in barcodes])
        bad_type = branch_event("branch.checkin", "JX-B", "BT1")
        bad_type["type"] = []
        deep = json.dumps(branch_event("branch.checkin", "JX-B", "DEEP1")).encode()
        deep = deep[:-1] + b', "x": ' + _nested(100_000) + b"}"
        checkins = [branch_event("branch.checkin", "JX-B", b) for b in barcodes]
        records: list[Any] = [*checkins[:100], bad_type, (b"DEEP1", deep), *checkins[100:]]
        await produce(settings, "branch.events", records)

        async def all_handled() -> bool:
            async with client.service.ctx.sessionmaker() as session:
                moved = await session.scalar(select(func.count()).select_from(Item)
                                             .where(Item.status == "in_transit"))
            return moved == 200

        await eventually(all_handled, timeout=60, what="200 good check-ins handled")
        dlq = await read_topic(settings, "dlq.circulation", at_least=2, settle=1.0)
        reasons = {r.key: dict(r.headers)["error-type"] for r in dlq}
        assert reasons == {b"BT1": b"invalid_envelope", b"DEEP1": b"not_json"}


async def test_nul_in_a_header_reaches_the_dead_letter_topic_intact(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings):
        await produce(settings, "branch.events", [(b"NUL1", b"{not json")],
                      headers=[("trace", b"a\x00b")])
        [record] = await read_topic(settings, "dlq.circulation", at_least=1, settle=1.0)
        headers = dict(record.headers)
        assert headers["trace"] == b"a\x00b" and headers["error-type"] == b"not_json"


async def test_records_are_bound_to_their_topic_and_subject(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await produce(settings, "cataloging.items", [item_cataloged("W1", "JX-A")])
        forged = cloud_event("logistics.shipment_delivered", "W1",
                             {"shipment_id": "S", "transfer_id": "T", "barcode": "W1",
                              "site": "JX-A"}, source="branchline/logistics")
        wrong = branch_event("branch.checkin", "JX-B", "W1")
        wrong["subject"] = "SOMETHING-ELSE"
        await produce(settings, "branch.events", [forged, (b"WS1", json.dumps(wrong).encode())])
        dlq = await read_topic(settings, "dlq.circulation", at_least=2, settle=1.0)
        reasons = {r.key: dict(r.headers)["error-type"] for r in dlq}
        assert reasons == {b"W1": b"wrong_topic", b"WS1": b"wrong_subject"}
        r = await client.get("/items/W1", headers=token("admin"))
        assert r.json()["status"] == "available"  # neither forged fact was applied


class _Record:
    def __init__(self, topic: str, partition: int, offset: int, key: bytes,
                 value: bytes) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key, self.value, self.headers = key, value, []


async def test_a_redelivered_poison_record_is_dead_lettered_once(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        service = client.service
        processor = EventProcessor(service.ctx, SPEC.handlers)
        record = Incoming.from_record(_Record("branch.events", 0, 7, b"K7", b"{not json"))
        await processor.process([record])
        await processor.process([record])  # the same record delivered again
        dlq = await read_topic(settings, "dlq.circulation", at_least=1, settle=1.5,
                               where=lambda r: r.key == b"K7")
        assert len(dlq) == 1


async def test_a_record_that_cannot_be_dead_lettered_is_parked(
    infra: Infra, monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        service = client.service
        processor = EventProcessor(service.ctx, SPEC.handlers)

        def refuse(*_: object, **__: object) -> None:
            # The NUL (which Postgres text refuses) ends up in the parked reason.
            raise ValueError("this dead letter can never be written \x00")

        monkeypatch.setattr(SqlUnitOfWork, "dead_letter", refuse)
        record = Incoming.from_record(_Record("branch.events", 1, 9, b"K9", b"{not json"))
        await processor.process([record])  # returns: nothing retried forever
        monkeypatch.undo()
        async with service.ctx.sessionmaker() as session:
            parked = (await session.execute(select(service.ctx.tables.parked))).all()
        assert [(p.stage, p.key, p.offset, p.error_type) for p in parked] == [
            ("consume", b"K9", 9, "not_json")]
        assert "can never be written" in parked[0].reason


async def test_two_replicas_changing_one_item_take_turns(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await produce(settings, "cataloging.items", [item_cataloged("L1", "JX-A")])

        async def registered() -> bool:
            return (await client.get("/items/L1", headers=token("admin"))).status_code == 200

        await eventually(registered, what="item registered")
        ctx = client.service.ctx
        first_locked = asyncio.Event()
        order: list[str] = []

        async def first() -> None:
            async with SqlUnitOfWork(ctx) as uow:
                await uow.repo(Item).load(["L1"], lock=True)
                item = await uow.repo(Item).get("L1")
                assert item is not None
                first_locked.set()
                await asyncio.sleep(0.5)
                item.status = "on_loan"
                order.append("first committed")

        async def second() -> str:
            await first_locked.wait()
            async with SqlUnitOfWork(ctx) as uow:
                await uow.repo(Item).load(["L1"], lock=True)  # waits for the first
                order.append("second read")
                item = await uow.repo(Item).get("L1")
                assert item is not None
                return item.status

        _, seen = await asyncio.gather(first(), second())
        assert order == ["first committed", "second read"]
        assert seen == "on_loan"  # applied on top of the first, not on a stale copy


async def test_a_poison_record_at_a_reused_offset_is_dead_lettered_again(infra: Infra) -> None:
    # A broker restarted empty hands out offsets again: a different record at an offset
    # already dead-lettered is new poison, not a redelivery.
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        processor = EventProcessor(client.service.ctx, SPEC.handlers)
        first = Incoming.from_record(_Record("branch.events", 2, 3, b"R1", b"{not json"))
        second = Incoming.from_record(_Record("branch.events", 2, 3, b"R2", b"[1, 2"))
        await processor.process([first])
        await processor.process([second])
        await processor.process([first])  # and the first one again: still once
        dlq = await read_topic(settings, "dlq.circulation", at_least=2, settle=1.5)
        assert sorted(r.key for r in dlq) == [b"R1", b"R2"]


async def test_a_reason_quoting_text_that_is_not_utf8_is_still_dead_lettered(
    infra: Infra,
) -> None:
    # `data.branch` with a lone surrogate (valid JSON) ends up in the invalid_source
    # reason, which used to fail the dead letter and the parking alike: a wedge.
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        processor = EventProcessor(client.service.ctx, SPEC.handlers)
        event = branch_event("branch.checkin", "JX-B", "S1")
        event["data"]["branch"] = "JX-\ud800"
        event["source"] = "branch/JX-B"
        record = Incoming.from_record(_Record("branch.events", 0, 1, b"S1",
                                              json.dumps(event).encode()))
        assert record.error is not None and record.error.error_type == "invalid_source"
        await processor.process([record])
        [dead] = await read_topic(settings, "dlq.circulation", at_least=1, settle=1.0)
        headers = dict(dead.headers)
        assert headers["error-type"] == b"invalid_source" and b"\\ud800" in headers["error"]


def _incoming(topic: str, offset: int, event: dict[str, Any], partition: int = 0) -> Incoming:
    item = Incoming.from_record(_Record(topic, partition, offset, event["subject"].encode(),
                                        json.dumps(event).encode()))
    assert item.error is None, item.error
    return item


async def _waiting_for_a_lock(ctx: ServiceContext) -> int:
    async with ctx.sessionmaker() as session:
        waiting = await session.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"))
    return int(waiting or 0)


@pytest.mark.parametrize("first", ["delivery", "checkout"])
async def test_two_replicas_handling_one_item_from_two_topics_take_turns(
    infra: Infra, first: str,
) -> None:
    """A delivery (logistics.shipments) and a check-out (branch.events) of one item, handled
    at once by two replicas' processors: the second waits for the first's row lock and
    applies on top of its result, whichever goes first."""
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        ctx = client.service.ctx
        setup = EventProcessor(ctx, SPEC.handlers)
        await setup.process([_incoming("cataloging.items", 0,
                                       item_cataloged("C1", "JX-B", site="JX-A"))])
        async with ctx.sessionmaker() as session:
            item = await session.get(Item, "C1")
            assert item is not None and item.status == "in_transit" and item.open_transfer_id
            transfer_id = item.open_transfer_id
        delivery = _incoming("logistics.shipments", 1, cloud_event(
            "logistics.shipment_delivered", "C1",
            {"shipment_id": "SH1", "transfer_id": transfer_id, "barcode": "C1",
             "site": "JX-B"}, source="branchline/logistics"))
        checkout = _incoming("branch.events", 1, branch_event(
            "branch.checkout", "JX-B", "C1", patron="P1"))

        # Replica one stops inside its transaction right after its batch prefetch.
        prefetched, go_on = asyncio.Event(), asyncio.Event()
        original = SPEC.handlers.prefetch
        assert original is not None

        async def prefetch_then_wait(uow: UnitOfWork,
                                     events: Any) -> None:
            await original(uow, events)
            prefetched.set()
            await go_on.wait()

        paused = Handlers()
        paused.by_type = SPEC.handlers.by_type
        paused.prefetch = prefetch_then_wait
        one, two = EventProcessor(ctx, paused), EventProcessor(ctx, SPEC.handlers)
        a, b = (delivery, checkout) if first == "delivery" else (checkout, delivery)
        task_one = asyncio.create_task(one.process([a]))
        await prefetched.wait()
        task_two = asyncio.create_task(two.process([b]))
        # Replica two either waits for the item's lock (the fix) or runs through on a copy
        # replica one is about to overwrite (the lost update).
        await eventually(lambda: _done_or_waiting(task_two, ctx), timeout=10,
                         what="replica two blocked on the item or done")
        go_on.set()
        await asyncio.gather(task_one, task_two)

        async with ctx.sessionmaker() as session:
            item = await session.get(Item, "C1")
            transfer = await session.get(Transfer, transfer_id)
            loans = (await session.execute(select(Loan).where(Loan.barcode == "C1"))).scalars()
            closures = await session.scalar(
                select(func.count()).select_from(ctx.tables.outbox).where(
                    ctx.tables.outbox.c.event_type.in_(
                        ["circulation.transfer_completed", "circulation.transfer_cancelled"])))
            [loan] = list(loans)
        assert item is not None and transfer is not None
        assert (item.status, item.site, item.loan_id) == ("on_loan", "JX-B", loan.loan_id)
        assert loan.returned_at is None and item.open_transfer_id is None
        assert transfer.status == ("completed" if first == "delivery" else "cancelled")
        assert closures == 1  # the transfer was closed once, by whichever came first


async def _done_or_waiting(task: asyncio.Task[None], ctx: ServiceContext) -> bool:
    return task.done() or await _waiting_for_a_lock(ctx) > 0


async def test_two_replicas_inserting_one_new_item_retry_the_batch(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        ctx = client.service.ctx
        processor = EventProcessor(ctx, SPEC.handlers)
        checkin = _incoming("branch.events", 5, branch_event("branch.checkin", "JX-B", "N1"))
        async with ctx.sessionmaker() as other, other.begin():
            # Another replica has just inserted the same unknown barcode, not committed yet.
            other.add(Item(barcode="N1", site="JX-C", status="available"))
            await other.flush()
            task = asyncio.create_task(processor.process([checkin]))
            await eventually(lambda: _done_or_waiting(task, ctx), timeout=10,
                             what="the insert waiting on the other replica's row")
        # The other replica committed: this batch hit the unique index. It is retried as a
        # batch (the caller rewinds), not broken up and dead-lettered.
        with pytest.raises(IntegrityError) as failed:
            await task
        assert _is_unique_violation(failed.value)
        await processor.process([checkin])  # the redelivered batch finds the row
        async with ctx.sessionmaker() as session:
            item = await session.get(Item, "N1")
        assert item is not None and item.site == "JX-B"


class _UniqueViolation(Exception):
    sqlstate = "23505"


async def test_a_unique_violation_that_persists_is_dead_lettered_after_three_tries(
    infra: Infra,
) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        async def always_conflicts(uow: UnitOfWork, env: Envelope, data: Event) -> None:
            raise _UniqueViolation("duplicate key value violates unique constraint")

        conflicting = Handlers()
        conflicting.by_type = {"branch.checkin": always_conflicts}
        processor = EventProcessor(client.service.ctx, conflicting)
        checkin = _incoming("branch.events", 6, branch_event("branch.checkin", "JX-B", "U1"))
        for _ in range(EventProcessor.UNIQUE_RETRIES):
            with pytest.raises(_UniqueViolation):
                await processor.process([checkin])
        await processor.process([checkin])  # bounded: then isolated and dead-lettered
        [dead] = await read_topic(settings, "dlq.circulation", at_least=1, settle=1.0)
        assert dead.key == b"U1" and dict(dead.headers)["error-type"] == b"handler_error"


def test_a_hold_event_is_bound_to_its_patron() -> None:
    # Holds carry no barcode: their subject is the patron (checked once they are handled;
    # today the reserved types are dead-lettered as unhandled_type before this).
    hold = cloud_event("branch.hold_requested", "P-OTHER",
                       {"branch": "JX-B", "patron": "P1", "isbn": "9787020002207"},
                       source="branch/JX-B")
    wrong = Incoming.from_record(_Record("t.branch.events", 0, 1, b"P-OTHER",
                                         json.dumps(hold).encode()),
                                 handled=None, ingress={"t.branch.events"}, prefix="t.")
    assert wrong.error is not None and wrong.error.error_type == "wrong_subject"
    assert "patron 'P1'" in wrong.error.reason
    hold["subject"] = "P1"
    right = Incoming.from_record(_Record("t.branch.events", 0, 2, b"P1",
                                         json.dumps(hold).encode()),
                                 handled=None, ingress={"t.branch.events"}, prefix="t.")
    assert right.error is None and right.envelope is not None


@pytest.mark.parametrize("split_from", [1, 5])
async def test_a_batch_s_partitions_commit_apart_and_a_failed_one_is_redone_alone(
    infra: Infra, monkeypatch: pytest.MonkeyPatch, split_from: int,
) -> None:
    """Partition 1 fails transiently: partition 0's transaction still commits, the batch
    raises (rewound), and when it comes back the inbox drops partition 0's records. A
    batch smaller than `split_from` (here 4 records) is one transaction: all or nothing."""
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        ctx = client.service.ctx
        batch = [_incoming("cataloging.items", 0, item_cataloged("PA1", "JX-A")),
                 _incoming("cataloging.items", 0, item_cataloged("PB1", "JX-A"), 1),
                 _incoming("branch.events", 0, branch_event("branch.checkin", "JX-B", "PA1")),
                 _incoming("branch.events", 0, branch_event("branch.checkin", "JX-B", "PB1"), 1)]
        by_partition = ByPartition(ctx, SPEC.handlers, split_from=split_from)
        real = EventProcessor.apply_event
        failed: list[str] = []

        async def flaky(self: EventProcessor, uow: UnitOfWork, env: Envelope,
                        payload: Event) -> None:
            if env.subject == "PB1" and env.type == "branch.checkin" and not failed:
                failed.append(env.subject)
                raise ConnectionError("Postgres went away")
            await real(self, uow, env, payload)  # type: ignore[arg-type]

        monkeypatch.setattr(EventProcessor, "apply_event", flaky)
        with pytest.raises(ConnectionError):
            await by_partition.process(batch)

        async def transfers() -> dict[str, int]:
            async with ctx.sessionmaker() as session:
                rows = (await session.execute(text(
                    "SELECT barcode, count(*) FROM circulation.transfer GROUP BY barcode"
                ))).all()
            return {str(barcode): int(n) for barcode, n in rows}

        # Split: partition 0 committed, partition 1 did not. Whole: neither did.
        assert await transfers() == ({"PA1": 1} if split_from == 1 else {})
        await by_partition.process(batch)  # the rewound batch fetched again
        assert await transfers() == {"PA1": 1, "PB1": 1}  # nothing doubled


async def test_a_batch_s_partitions_run_at_once_and_one_key_s_topics_stay_together(
    infra: Infra, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two partitions' handlers overlap in time; an item registered and checked in within
    one batch (two topics, one partition number) is handled in one transaction, in order."""
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        ctx = client.service.ctx
        real = EventProcessor.apply_event
        running: set[str] = set()
        overlapped: list[set[str]] = []

        async def slow(self: EventProcessor, uow: UnitOfWork, env: Envelope,
                       payload: Event) -> None:
            running.add(env.subject)
            if len(running) > 1:
                overlapped.append(set(running))
            await asyncio.sleep(0.05)
            running.discard(env.subject)
            await real(self, uow, env, payload)  # type: ignore[arg-type]

        monkeypatch.setattr(EventProcessor, "apply_event", slow)
        batch = [_incoming("cataloging.items", 0, item_cataloged(f"PC{p}", "JX-A"), p)
                 for p in range(4)]
        batch += [_incoming("branch.events", 0, branch_event("branch.checkin", "JX-B", f"PC{p}"),
                            p) for p in range(4)]
        await ByPartition(ctx, SPEC.handlers, split_from=1).process(batch)
        assert overlapped, "the partitions' transactions ran one after another"
        async with ctx.sessionmaker() as session:
            statuses = {str(b): str(s) for b, s in (await session.execute(
                text("SELECT barcode, status FROM circulation.item"))).all()}
        assert statuses == {f"PC{p}": "in_transit" for p in range(4)}
