"""Consumer faults on the real broker and Postgres: bad records never cost good ones, poison
is dead-lettered once (or parked), records are bound to their topic and subject, and two
replicas changing one item take turns.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from services.circulation.models import Item
from services.circulation.spec import SPEC
from shared.messaging.consumer import EventProcessor, Incoming
from shared.messaging.unit_of_work import SqlUnitOfWork
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
            raise ValueError("this dead letter can never be written")

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
