"""Circulation as a state machine, on real Postgres through the real event processor.

Hypothesis drives random sequences of what branch systems and logistics send — check-ins
and check-outs anywhere (some arriving late, from offline kiosks), renewals, items
reported missing, deliveries, holds placed and cancelled, holds expiring, records
delivered twice — and after every step the rules that must never break are read back from
the database:

- an item has at most one open transfer, and `item.open_transfer_id` names it;
- an available item stands at a site, with no loan and no transfer; on loan ⇔ a loan runs;
- a hold moving or on the shelf has exactly one copy, and that copy serves only it;
- no reader waits for a title while a copy of it stands available;
- a check-in away from home, with nobody waiting, sends the item home once (or lets it
  float in its group); a record delivered twice changes nothing.

A second property applies one item's facts in time order and in a shuffled order and
requires the same end: where the item is, what it is doing, who has it.

Events go through `EventProcessor` (inbox, prefetch, handlers, outbox) exactly as the
consumer applies a batch; only Kafka is left out, so thousands of steps run in seconds.
Each example works on its own barcodes, titles and readers in one migrated database.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlmodel import col, select

from services.circulation.handlers import expire_holds
from services.circulation.models import Hold, Item, Loan, Transfer
from services.circulation.spec import SPEC
from shared.messaging.consumer import EventProcessor, Incoming
from shared.messaging.outbox import ServiceContext
from shared.messaging.unit_of_work import SqlUnitOfWork
from tests.support import Infra, cloud_event, create_database, make_settings, migrated_context

pytestmark = pytest.mark.integration

T = TypeVar("T")

#: A and B float together; C and D do not float; H1 and H2 are hubs.
SITES: dict[str, tuple[str, str | None, float, float]] = {
    "A": ("H1", "east", 30.75, 120.75), "B": ("H1", "east", 30.70, 120.70),
    "C": ("H1", None, 30.74, 120.76), "D": ("H2", None, 30.60, 120.95),
    "H1": ("H1", None, 30.77, 120.71), "H2": ("H2", None, 30.60, 120.90),
}
BRANCHES = ["A", "B", "C", "D"]
OWNERS = ["A", "C", "D"]
START = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)


@dataclass
class _Record:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: tuple[()] = ()


class Harness:
    """One migrated circulation database and a private event loop to drive it."""

    def __init__(self, infra: Infra) -> None:
        self.loop = asyncio.new_event_loop()
        self.infra = infra
        self.offsets = itertools.count()
        self._context: Any = None
        self.ctx: ServiceContext | None = None
        self.processor: EventProcessor | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def open(self) -> None:
        async def start() -> None:
            db = await create_database(self.infra)
            settings = make_settings(self.infra, db, "m.", holds_per_patron=3)
            self._context = migrated_context(SPEC, settings)
            self.ctx = await self._context.__aenter__()
            self.processor = EventProcessor(self.ctx, SPEC.handlers)
            await self.send([site_event(code) for code in SITES])

        self.run(start())

    def close(self) -> None:
        if self._context is not None:
            self.run(self._context.__aexit__(None, None, None))
        self.loop.close()

    async def send(self, events: list[dict[str, Any]]) -> list[Incoming]:
        """Apply events as one consumer batch; returns the records (to deliver again)."""
        assert self.processor is not None
        records = [Incoming.from_record(
            _Record(TOPIC_OF[e["type"]], 0, next(self.offsets), e["subject"].encode(),
                    json.dumps(e).encode()),
            SPEC.handlers, ingress=("branch.events",)) for e in events]
        for record in records:
            assert record.error is None, record.error
        await self.processor.process(records)
        return records

    async def again(self, records: list[Incoming]) -> None:
        assert self.processor is not None
        await self.processor.process(records)

    async def expire(self, today: date) -> None:
        assert self.ctx is not None
        async with SqlUnitOfWork(self.ctx) as uow:
            await expire_holds(uow, today)


TOPIC_OF = {"network.site_upserted": "network.sites",
            "cataloging.item_cataloged": "cataloging.items",
            "logistics.shipment_delivered": "logistics.shipments"}


def site_event(code: str) -> dict[str, Any]:
    hub, group, lat, lon = SITES[code]
    return cloud_event("network.site_upserted", code, {
        "code": code, "name": f"Site {code}", "kind": "hub" if code == hub else "town",
        "lat": lat, "lon": lon, "hub": hub, "floating_group": group,
        "opening_hours": {}, "courier_days": []}, source="branchline/logistics")


def branch(event_type: str, at: str, subject: str, time: datetime, **data: Any,
           ) -> dict[str, Any]:
    event = cloud_event(event_type, subject, {"branch": at, **data},
                        source=f"branch/{at}", time=time)
    TOPIC_OF.setdefault(event_type, "branch.events")
    return event


@dataclass
class Snapshot:
    items: dict[str, Item]
    transfers: list[Transfer]
    loans: list[Loan]
    holds: list[Hold]

    def key(self) -> tuple[Any, ...]:
        return (sorted((i.barcode, i.status, i.site, i.loan_id, i.open_transfer_id, i.hold_id)
                       for i in self.items.values()),
                sorted((t.transfer_id, t.status, t.to_site) for t in self.transfers),
                sorted((loan.loan_id, loan.returned_at, loan.renewals) for loan in self.loans),
                sorted((h.hold_id, h.status, h.barcode) for h in self.holds))


async def snapshot(ctx: ServiceContext, prefix: str) -> Snapshot:
    async with ctx.sessionmaker() as session:
        items = (await session.exec(select(Item).where(
            col(Item.barcode).startswith(prefix)))).all()
        transfers = (await session.exec(select(Transfer).where(
            col(Transfer.barcode).startswith(prefix)))).all()
        loans = (await session.exec(select(Loan).where(
            col(Loan.barcode).startswith(prefix)))).all()
        holds = (await session.exec(select(Hold).where(
            col(Hold.patron).startswith(prefix)))).all()
    return Snapshot({i.barcode: i for i in items}, list(transfers), list(loans), list(holds))


class CirculationMachine(RuleBasedStateMachine):
    harness: Harness  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.prefix = uuid.uuid4().hex[:8].upper()
        self.now = START
        self.copies: dict[str, tuple[str, str]] = {}  # barcode → (title, owner)
        self.sent: list[list[Incoming]] = []

    # --- helpers --------------------------------------------------------------------------

    def tick(self, minutes: int) -> datetime:
        self.now += timedelta(minutes=minutes)
        return self.now

    def send(self, *events: dict[str, Any]) -> None:
        self.sent.append(self.harness.run(self.harness.send(list(events))))

    def state(self) -> Snapshot:
        assert self.harness.ctx is not None
        return self.harness.run(snapshot(self.harness.ctx, self.prefix))

    def barcode(self, n: int) -> str:
        return f"{self.prefix}-{n}"

    def patron(self, n: int) -> str:
        return f"{self.prefix}-P{n}"

    # --- the network's copies -------------------------------------------------------------

    @initialize(plan=st.lists(st.tuples(st.sampled_from(["T1", "T2"]), st.sampled_from(OWNERS)),
                              min_size=2, max_size=5))
    def catalogue(self, plan: list[tuple[str, str]]) -> None:
        events = []
        for n, (title, owner) in enumerate(plan):
            code = self.barcode(n)
            self.copies[code] = (title, owner)
            events.append(cloud_event("cataloging.item_cataloged", code, {
                "barcode": code, "bib_id": f"{self.prefix}-{title}", "isbn": None,
                "title": title, "call_number": "I247", "owning_branch": owner, "site": owner},
                source="branchline/cataloging", time=self.tick(1)))
        self.send(*events)

    # --- branch facts -----------------------------------------------------------------------

    @rule(n=st.integers(0, 4), at=st.sampled_from(BRANCHES), minutes=st.integers(1, 90))
    def checkin(self, n: int, at: str, minutes: int) -> None:
        code = self.barcode(n % len(self.copies))
        before = self.state()
        item = before.items[code]
        title, owner = self.copies[code]
        waiting = [h for h in before.holds if h.status == "waiting"
                   and h.title_key == f"bib:{self.prefix}-{title}"]
        self.send(branch("branch.checkin", at, code, self.tick(minutes), barcode=code))
        after = self.state()
        # The plain return: nothing moving, nobody waiting, not serving a hold.
        if item.open_transfer_id is None and item.hold_id is None and not waiting:
            moved = after.items[code]
            opened = [t for t in after.transfers if t.barcode == code and t.status == "open"]
            floats = SITES[at][1] is not None and SITES[at][1] == SITES[owner][1]
            if at == owner or floats:
                assert (moved.status, moved.site, opened) == ("available", at, []), moved
            else:
                assert [t.to_site for t in opened] == [owner], opened
                assert moved.status == "in_transit" and moved.site == at

    @rule(n=st.integers(0, 4), at=st.sampled_from(BRANCHES), reader=st.integers(0, 3),
          minutes=st.integers(1, 90))
    def checkout(self, n: int, at: str, reader: int, minutes: int) -> None:
        code = self.barcode(n % len(self.copies))
        self.send(branch("branch.checkout", at, code, self.tick(minutes), barcode=code,
                         patron=self.patron(reader)))
        after = self.state()
        item = after.items[code]
        assert (item.status, item.site) == ("on_loan", at)
        assert [loan.patron for loan in after.loans
                if loan.barcode == code and loan.returned_at is None] == [self.patron(reader)]

    @rule(n=st.integers(0, 4), kind=st.sampled_from(["branch.checkin", "branch.checkout"]),
          at=st.sampled_from(BRANCHES), reader=st.integers(0, 3), back=st.integers(1, 600))
    def late_fact(self, n: int, kind: str, at: str, reader: int, back: int) -> None:
        """An offline kiosk's fact, dated before facts already applied."""
        code = self.barcode(n % len(self.copies))
        data: dict[str, Any] = {"barcode": code}
        if kind == "branch.checkout":
            data["patron"] = self.patron(reader)
        self.send(branch(kind, at, code, self.now - timedelta(minutes=back), **data))

    @rule(n=st.integers(0, 4), reader=st.integers(0, 3), minutes=st.integers(1, 90))
    def renewal(self, n: int, reader: int, minutes: int) -> None:
        code = self.barcode(n % len(self.copies))
        self.send(branch("branch.renewal", "A", code, self.tick(minutes), barcode=code,
                         patron=self.patron(reader)))

    @rule(n=st.integers(0, 4), at=st.sampled_from(BRANCHES), minutes=st.integers(1, 90))
    def missing(self, n: int, at: str, minutes: int) -> None:
        code = self.barcode(n % len(self.copies))
        self.send(branch("branch.item_missing", at, code, self.tick(minutes), barcode=code))
        assert self.state().items[code].status == "missing"

    # --- logistics --------------------------------------------------------------------------

    @rule(pick=st.integers(0, 9), minutes=st.integers(1, 600))
    def deliver(self, pick: int, minutes: int) -> None:
        # Picked by barcode (one open transfer each), never by generated id, so that a
        # replayed example picks the same transfer.
        opened = sorted((t for t in self.state().transfers if t.status == "open"),
                        key=lambda t: t.barcode)
        if not opened:
            return
        transfer = opened[pick % len(opened)]
        self.send(cloud_event("logistics.shipment_delivered", transfer.barcode, {
            "shipment_id": f"S-{transfer.transfer_id}", "transfer_id": transfer.transfer_id,
            "barcode": transfer.barcode, "site": transfer.to_site},
            source="branchline/logistics", time=self.tick(minutes)))
        after = self.state()
        assert next(t for t in after.transfers
                    if t.transfer_id == transfer.transfer_id).status == "completed"

    # --- holds ----------------------------------------------------------------------------

    @rule(reader=st.integers(0, 3), pickup=st.sampled_from(BRANCHES),
          title=st.sampled_from(["T1", "T2"]), minutes=st.integers(1, 90))
    def place_hold(self, reader: int, pickup: str, title: str, minutes: int) -> None:
        self.send(branch("branch.hold_requested", pickup, self.patron(reader), self.tick(minutes),
                         patron=self.patron(reader), bib_id=f"{self.prefix}-{title}"))

    @rule(pick=st.integers(0, 9), minutes=st.integers(1, 90))
    def cancel_hold(self, pick: int, minutes: int) -> None:
        active = sorted((h for h in self.state().holds
                         if h.status in ("waiting", "in_transit", "ready")),
                        key=lambda h: h.placed_at)  # simulated times: one hold per tick
        if not active:
            return
        hold = active[pick % len(active)]
        self.send(branch("branch.hold_cancelled", hold.pickup_branch, hold.patron,
                         self.tick(minutes), patron=hold.patron, hold_id=hold.hold_id))
        closed = next(h for h in self.state().holds if h.hold_id == hold.hold_id)
        assert closed.status == "cancelled"

    @rule(days=st.integers(1, 10))
    def days_pass(self, days: int) -> None:
        self.tick(days * 24 * 60)
        self.harness.run(self.harness.expire(self.now.date()))

    # --- the stream -----------------------------------------------------------------------

    @precondition(lambda self: bool(self.sent))
    @rule(pick=st.integers(0, 99))
    def delivered_twice(self, pick: int) -> None:
        records = self.sent[pick % len(self.sent)]
        before = self.state().key()
        self.harness.run(self.harness.again(records))
        assert self.state().key() == before

    # --- what must always hold ------------------------------------------------------------

    @invariant()
    def one_open_transfer_per_item(self) -> None:
        state = self.state()
        for code, item in state.items.items():
            opened = [t.transfer_id for t in state.transfers
                      if t.barcode == code and t.status == "open"]
            assert len(opened) <= 1, (code, opened)
            assert item.open_transfer_id == (opened[0] if opened else None), (code, item)
            if item.status == "in_transit":
                assert opened, (code, "in transit without a transfer")
            if opened:
                assert item.status in ("in_transit", "missing"), (code, item.status)

    @invariant()
    def whereabouts_agree_with_loans(self) -> None:
        state = self.state()
        for code, item in state.items.items():
            running = [loan for loan in state.loans
                       if loan.barcode == code and loan.returned_at is None]
            assert len(running) <= 1, (code, running)
            assert item.loan_id == (running[0].loan_id if running else None), (code, item)
            if item.status == "available":
                assert item.site is not None and item.loan_id is None, item
                assert item.open_transfer_id is None and item.hold_id is None, item
            if item.status == "on_loan":
                assert item.loan_id is not None, item
            if item.loan_id is not None:
                assert item.status in ("on_loan", "missing"), item

    @invariant()
    def holds_and_copies_pair_one_to_one(self) -> None:
        state = self.state()
        holds = {h.hold_id: h for h in state.holds}
        for hold in holds.values():
            if hold.status in ("in_transit", "ready"):
                assert hold.barcode is not None, hold
                item = state.items[hold.barcode]
                assert item.hold_id == hold.hold_id, (hold, item)
                if hold.status == "ready":
                    assert (item.status, item.site) == ("on_hold_shelf", hold.pickup_branch), (
                        hold, item)
                else:
                    transfer = next(t for t in state.transfers
                                    if t.transfer_id == item.open_transfer_id)
                    assert (transfer.to_site, transfer.hold_id) == (
                        hold.pickup_branch, hold.hold_id), (hold, transfer)
            else:
                assert hold.status == "waiting" or all(
                    i.hold_id != hold.hold_id for i in state.items.values()), hold
                if hold.status == "waiting":
                    assert hold.barcode is None, hold
        for item in state.items.values():
            if item.hold_id is not None:
                hold = holds[item.hold_id]
                assert hold.status in ("in_transit", "ready") and hold.barcode == item.barcode
            if item.status == "on_hold_shelf":
                assert item.hold_id is not None, item

    @invariant()
    def nobody_waits_while_a_copy_stands_free(self) -> None:
        state = self.state()
        waiting = {h.title_key for h in state.holds if h.status == "waiting"}
        for code, item in state.items.items():
            if item.status == "available":
                assert f"bib:{item.bib_id}" not in waiting, (code, item.site, waiting)


@pytest.fixture(scope="module")
def harness(infra: Infra) -> Any:
    h = Harness(infra)
    h.open()
    yield h
    h.close()


def test_circulation_rules_hold_for_any_sequence_of_facts(harness: Harness) -> None:
    CirculationMachine.harness = harness
    run_state_machine_as_test(CirculationMachine, settings=settings(
        max_examples=int(os.environ.get("MACHINE_EXAMPLES", "60")), stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))


# --- order: offline facts land where they happened -----------------------------------------

FACTS = st.lists(st.tuples(st.sampled_from(["branch.checkout", "branch.checkin"]),
                           st.sampled_from(BRANCHES), st.integers(0, 2)),
                 min_size=1, max_size=7)


@given(facts=FACTS, seed=st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
def test_facts_end_the_same_whatever_order_they_arrive_in(
    harness: Harness, facts: list[tuple[str, str, int]], seed: int,
) -> None:
    """One item's check-outs and check-ins, sent in time order to one copy and shuffled to
    another, leave both where the facts say: same status, site, reader and destination."""
    prefix = uuid.uuid4().hex[:8].upper()
    ends = []
    for run, shuffle in (("ordered", False), ("shuffled", True)):
        code = f"{prefix}-{run}"
        timed = [branch(kind, at, code, START + timedelta(minutes=10 * (i + 1)), barcode=code,
                        **({"patron": f"P{reader}"} if kind == "branch.checkout" else {}))
                 for i, (kind, at, reader) in enumerate(facts)]
        if shuffle:
            random.Random(seed).shuffle(timed)
        harness.run(harness.send([cloud_event("cataloging.item_cataloged", code, {
            "barcode": code, "bib_id": f"{prefix}-{run}", "isbn": None, "title": "T",
            "call_number": "I247", "owning_branch": "C", "site": "C"},
            source="branchline/cataloging", time=START)]))
        for event in timed:  # one record per batch: the kiosk's upload order
            harness.run(harness.send([event]))
        assert harness.ctx is not None
        state = harness.run(snapshot(harness.ctx, code))
        item = state.items[code]
        running = [loan.patron for loan in state.loans if loan.returned_at is None]
        opened = [t.to_site for t in state.transfers if t.status == "open"]
        ends.append((item.status, item.site, running, opened))
    assert ends[0] == ends[1], f"in time order: {ends[0]}; shuffled: {ends[1]}"
