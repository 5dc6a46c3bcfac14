"""Cataloging's handlers and use cases against the in-memory unit of work: no Postgres, no Kafka.

Barcode serials come from the Postgres sequence in production; here `receive_copies` is
given a counter instead (the one part of `on_copies_received` that needs SQL).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.cataloging import domain, handlers
from services.cataloging.models import Bib, Item, Site
from shared.contracts import Envelope, Event, make_event
from shared.contracts.acquisition import CopiesReceived, ReceivedCopy
from shared.contracts.cataloging import BibUpserted, ItemCataloged, ItemWithdrawn
from shared.contracts.circulation import ItemStatusChanged
from shared.contracts.logistics import SiteUpserted
from shared.errors import Conflict, NotFound
from shared.service.settings import Settings
from tests.fakes import FakeUnitOfWork

AT = datetime(2026, 11, 22, 10, tzinfo=UTC)
#: Most tests here follow copies past the queue, as a simulation does.
AUTO = Settings(catalog_auto_complete=True)


def envelope(data: Event, subject: str, source: str = "branchline/acquisition",
             time: datetime = AT) -> Envelope:
    return make_event(data, subject=subject, source=source, time=time)


class Counter:
    """Barcode serials 1, 2, 3, … as the fresh sequence would give them."""

    def __init__(self) -> None:
        self.last = 0

    async def take(self, count: int) -> list[int]:
        taken = list(range(self.last + 1, self.last + count + 1))
        self.last += count
        return taken


def received(isbn: str, *copies: tuple[str, str], title: str = "Fortress Besieged",
             author: str | None = "Qian, Zhongshu", line_id: str = "L-1") -> CopiesReceived:
    return CopiesReceived(
        order_id="O-1", line_id=line_id, isbn=isbn, title=title, author=author, year=1947,
        copies=[ReceivedCopy(copy_id=c, owning_branch=b) for c, b in copies], received_at=AT,
    )


async def receive(uow: FakeUnitOfWork, data: CopiesReceived, serials: Counter) -> Envelope:
    env = envelope(data, data.order_id)
    await handlers.receive_copies(uow, env, data, serials)
    return env


def cataloged(uow: FakeUnitOfWork) -> list[dict[str, Any]]:
    return [e.data for e in uow.emitted if e.type == ItemCataloged.event_type]


async def test_received_copies_become_barcoded_items_of_one_new_bib() -> None:
    uow = FakeUnitOfWork("cataloging", Settings(processing_site="JX-PROC",
                                                   catalog_auto_complete=True))
    env = await receive(uow, received("7-02-000220-X", ("C-1", "JX-HN-01"), ("C-2", "JX-HY-02")),
                        Counter())

    [bib] = uow.repo(Bib).rows.values()
    assert (bib.isbn13, bib.isbn_valid, bib.title) == ("9787020002207", True, "Fortress Besieged")
    items = sorted(uow.repo(Item).rows.values(), key=lambda i: i.barcode)
    assert [(i.barcode, i.copy_id, i.owning_branch, i.site, i.status) for i in items] == [
        (domain.format_barcode(1), "C-1", "JX-HN-01", "JX-PROC", "in_processing"),
        (domain.format_barcode(2), "C-2", "JX-HY-02", "JX-PROC", "in_processing"),
    ]
    assert {i.bib_id for i in items} == {bib.bib_id}
    assert {i.call_number for i in items} == {"TBC/Q1947"}

    assert uow.types() == [BibUpserted.event_type] + [ItemCataloged.event_type] * 2
    assert uow.emitted[0].subject == bib.bib_id
    assert uow.emitted[0].data["isbns"] == ["9787020002207"]
    assert [(e.subject, e.causationid) for e in uow.emitted[1:]] == [
        (i.barcode, env.id) for i in items]
    assert {d["site"] for d in cataloged(uow)} == {"JX-PROC"}


async def test_a_receipt_sent_again_catalogues_nothing_new() -> None:
    uow = FakeUnitOfWork("cataloging", AUTO)
    serials = Counter()
    await receive(uow, received("9787020002207", ("C-1", "JX-HN-01")), serials)
    # the same copy again, twice in one receipt, with one new copy
    await receive(uow, received("9787020002207", ("C-1", "JX-HN-01"), ("C-1", "JX-HN-01"),
                                ("C-2", "JX-HN-01")), serials)
    await receive(uow, received("9787020002207", ("C-2", "JX-HN-01")), serials)

    assert sorted(d["copy_id"] for d in cataloged(uow)) == ["C-1", "C-2"]
    assert len(uow.repo(Item).rows) == 2
    assert serials.last == 2  # no serial drawn for a copy already catalogued
    assert uow.types().count(BibUpserted.event_type) == 1


async def test_isbn10_and_isbn13_receipts_share_a_bib_and_a_misprint_gets_its_own() -> None:
    uow = FakeUnitOfWork("cataloging", AUTO)
    serials = Counter()
    await receive(uow, received("0-306-40615-2", ("D-1", "JX-HN-01"), title="Tables"), serials)
    await receive(uow, received("978-0-306-40615-7", ("D-2", "JX-HY-02"), title="Tables"),
                  serials)
    await receive(uow, received("978-0-306-40615-8", ("D-3", "JX-HY-02"), title="Misprinted"),
                  serials)

    by_copy = {d["copy_id"]: d["bib_id"] for d in cataloged(uow)}
    assert by_copy["D-1"] == by_copy["D-2"] != by_copy["D-3"]
    bibs = {b.isbn13: b.isbn_valid for b in uow.repo(Bib).rows.values()}
    assert bibs == {"9780306406157": True, "9780306406158": False}
    assert uow.types().count(BibUpserted.event_type) == 2


async def test_a_batch_with_two_receipts_of_a_new_title_makes_one_bib() -> None:
    uow = FakeUnitOfWork("cataloging", AUTO)
    receipts = [received("9787020002207", ("C-1", "JX-HN-01"), line_id="L-1"),
                received("978-7-02-000220-7", ("C-2", "JX-HN-01"), ("C-1", "JX-HN-01"),
                         line_id="L-2")]
    batch = [(envelope(data, data.order_id), data) for data in receipts]

    assert await handlers.load_batch(uow, batch) == 2  # serials to reserve: C-1 and C-2
    serials = Counter()
    for env, data in batch:
        await handlers.receive_copies(uow, env, data, serials)

    assert len(uow.repo(Bib).rows) == 1
    assert sorted(i.copy_id or "" for i in uow.repo(Item).rows.values()) == ["C-1", "C-2"]
    assert serials.last == 2


async def catalogued_item(uow: FakeUnitOfWork) -> Item:
    await receive(uow, received("9787020002207", ("C-1", "JX-HN-01")), Counter())
    [item] = uow.repo(Item).rows.values()
    return item


def status_changed(item: Item, status: Any, site: str) -> ItemStatusChanged:
    return ItemStatusChanged(barcode=item.barcode, bib_id=item.bib_id, status=status, site=site,
                             owning_branch=item.owning_branch)


async def test_circulation_status_is_kept_unless_an_older_fact_arrives_late() -> None:
    uow = FakeUnitOfWork("cataloging", AUTO)
    item = await catalogued_item(uow)
    emitted = len(uow.emitted)
    for status, site, at in [("available", "JX-HN-01", AT),
                             ("in_transit", "JX-CENTRAL", AT - timedelta(minutes=5))]:
        data = status_changed(item, status, site)
        await handlers.on_item_status_changed(
            uow, envelope(data, item.barcode, "branchline/circulation", at), data)
    assert (item.status, item.site, item.status_at) == ("available", "JX-HN-01", AT)

    unknown = ItemStatusChanged(barcode="UNKNOWN-1", bib_id="b", status="on_loan",
                                site="JX-HY-02", owning_branch="JX-HY-02")
    await handlers.on_item_status_changed(uow, envelope(unknown, "UNKNOWN-1"), unknown)
    assert list(uow.repo(Item).rows) == [item.barcode]
    assert len(uow.emitted) == emitted  # cataloging only keeps what circulation says


async def test_site_upserted_replaces_the_site() -> None:
    uow = FakeUnitOfWork("cataloging", AUTO)
    for name, active in (("Haining Library", True), ("Haining Central Library", False)):
        data = SiteUpserted(code="JX-HN-01", name=name, kind="town", lat=30.5, lon=120.7,
                            hub="JX-CENTRAL", opening_hours={"mon": [("09:00", "17:00")]},
                            courier_days=["mon"], active=active)
        await handlers.on_site_upserted(uow, envelope(data, "JX-HN-01", "branchline/logistics"),
                                        data)
    [site] = uow.repo(Site).rows.values()
    assert (site.code, site.name, site.kind, site.active) == (
        "JX-HN-01", "Haining Central Library", "town", False)


async def test_a_full_record_overlays_a_received_title_and_merge_fills_only_gaps() -> None:
    uow = FakeUnitOfWork("cataloging", AUTO)
    item = await catalogued_item(uow)
    full = domain.BibData(isbn="7-02-000220-X", title="Wei cheng", author="Qian, Zhongshu",
                          publisher="Ren min wen xue chu ban she", year=1947, marc=b"record")
    bib, outcome, matched_by = await handlers.upsert_bib(uow, full, on_match="keep")
    # a brief bib is always upgraded by a full record, whatever the import says
    assert (bib.bib_id, outcome, matched_by) == (item.bib_id, "overlaid", "isbn")
    assert (bib.title, bib.publisher, bib.updated_at is not None) == (
        "Wei cheng", "Ren min wen xue chu ban she", True)

    other = domain.BibData(isbn="9787020002207", title="Another title", author=None,
                           language="chi", subjects=("Fiction",), marc=b"other")
    _, outcome, _ = await handlers.upsert_bib(uow, other, on_match="keep")
    assert outcome == "kept" and bib.title == "Wei cheng"
    _, outcome, _ = await handlers.upsert_bib(uow, other, on_match="merge")
    assert outcome == "merged"
    assert (bib.title, bib.author, bib.language, bib.subjects, bib.marc) == (
        "Wei cheng", "Qian, Zhongshu", "chi", ["Fiction"], b"record")
    _, outcome, _ = await handlers.upsert_bib(uow, other, on_match="merge")
    assert outcome == "kept"  # nothing left to fill in
    upserted = [e.data["title"] for e in uow.emitted if e.type == BibUpserted.event_type]
    assert upserted == ["Fortress Besieged", "Wei cheng", "Wei cheng"]

    # without an ISBN, the title + author + year finds the bib, which keeps its ISBN
    bare = domain.BibData(isbn=None, title="WEI  CHENG.", author="Zhongshu Qian", year=1947)
    found, outcome, matched_by = await handlers.upsert_bib(uow, bare, on_match="overlay")
    assert (found.bib_id, matched_by, found.isbn13) == (item.bib_id, "title", "9787020002207")
    assert len(uow.repo(Bib).rows) == 1


async def test_the_queue_holds_copies_until_call_number_and_label() -> None:
    uow = FakeUnitOfWork("cataloging")  # the queue on: no automatic completion
    serials = Counter()
    await receive(uow, received("9787020002207", ("C-1", "JX-HN-01"), ("C-2", "JX-HN-01")),
                  serials)
    assert cataloged(uow) == []
    items = sorted(uow.repo(Item).rows.values(), key=lambda i: i.barcode)
    codes = [i.barcode for i in items]
    assert [domain.lacks(full_record=False, call_number=i.call_number, label_printed=False)
            for i in items] == [["full_record", "call_number", "label"]] * 2

    done, refused = await handlers.complete_items(uow, codes)
    assert done == [] and {r.reason for r in refused} == {"lacks call_number, label"}
    [bib] = uow.repo(Bib).rows.values()
    bib.classification, bib.classification_scheme = "I246.5", "clc"
    printed, refused = await handlers.print_labels(uow, codes[:1])
    assert [i.call_number for i in printed] == ["I246.5/1"] and refused == []
    done, refused = await handlers.complete_items(uow, codes)
    assert [i.barcode for i in done] == codes[:1]
    assert refused == [handlers.Refusal(codes[1], "lacks label")]
    assert items[1].call_number == "I246.5/1"  # copies of one title share its mark
    assert [d["call_number"] for d in cataloged(uow)] == ["I246.5/1"]

    # a second title in the class takes the next 种次号
    await receive(uow, received("9787506365437", ("C-3", "JX-HN-01"), title="Huo zhe"),
                  serials)
    [third] = [i for i in uow.repo(Item).rows.values() if i.copy_id == "C-3"]
    second = next(b for b in uow.repo(Bib).rows.values() if b.title == "Huo zhe")
    second.classification, second.classification_scheme = "I246.5", "clc"
    printed, _ = await handlers.print_labels(uow, [third.barcode])
    assert printed[0].call_number == "I246.5/2"


async def test_withdrawal_is_refused_while_lent_and_announced_once() -> None:
    uow = FakeUnitOfWork("cataloging", AUTO)
    item = await catalogued_item(uow)
    item.status = "on_loan"
    with pytest.raises(Conflict, match="on loan"):
        await handlers.withdraw_item(uow, item.barcode, "damaged")
    item.status = "available"
    await handlers.withdraw_item(uow, item.barcode, "damaged")
    assert (item.status, item.withdrawn_reason) == ("withdrawn", "damaged")
    with pytest.raises(Conflict, match="already"):
        await handlers.withdraw_item(uow, item.barcode, "damaged")
    with pytest.raises(NotFound):
        await handlers.withdraw_item(uow, "JX0000000000", "damaged")
    [withdrawn] = [e for e in uow.emitted if e.type == ItemWithdrawn.event_type]
    assert (withdrawn.subject, withdrawn.data["reason"]) == (item.barcode, "damaged")
