"""Cataloging's use cases: each runs inside the caller's transaction (state + inbox + outbox).

A consumer hands a whole fetched batch to one unit of work. `prefetch` loads the bibs (by
normalised ISBN), items (by copy id or barcode) and sites the batch touches in a few
queries and reserves the barcode serials it will need in one round trip; the handlers then
find them without asking the database one by one. Rows created earlier in the same batch
are found the same way: two receipts of one new title in a batch share one bib.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import text
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from services.cataloging import domain
from services.cataloging.models import (
    BARCODE_SEQUENCE,
    SCHEMA,
    Bib,
    ClassSerial,
    Item,
    Site,
)
from shared.contracts import Envelope, Event, new_id, utcnow
from shared.contracts.acquisition import CopiesReceived
from shared.contracts.cataloging import BibUpserted, ItemCataloged, ItemWithdrawn
from shared.contracts.circulation import ItemStatusChanged
from shared.contracts.logistics import SiteUpserted
from shared.errors import Conflict, NotFound
from shared.messaging.consumer import Handlers
from shared.messaging.unit_of_work import SqlUnitOfWork, UnitOfWork
from shared.service.app import Service

log = logging.getLogger(__name__)

handlers = Handlers()

M = TypeVar("M", bound=SQLModel)


# --- barcode serials --------------------------------------------------------------------------


class Serials(Protocol):
    """Where new items' barcode serials come from."""

    async def take(self, count: int) -> list[int]: ...


@dataclass
class SequenceSerials:
    """Serials from the Postgres barcode sequence, reserved for a whole batch at once."""

    session: AsyncSession
    pool: list[int] = field(default_factory=list)

    async def reserve(self, count: int) -> None:
        """Draw `count` serials in one round trip (gaps, e.g. after a rollback, are harmless)."""
        if count <= 0:
            return
        connection = await self.session.connection()  # Core SQL inside the transaction
        result = await connection.execute(
            text(f"SELECT nextval('{BARCODE_SEQUENCE}') FROM generate_series(1, :n)"),
            {"n": count},
        )
        self.pool.extend(int(row[0]) for row in result)

    async def take(self, count: int) -> list[int]:
        if len(self.pool) < count:
            await self.reserve(count - len(self.pool))
        taken, self.pool = self.pool[:count], self.pool[count:]
        return taken


def sequence_serials(uow: SqlUnitOfWork) -> SequenceSerials:
    """The serial pool of this transaction, made on first use and dropped with it."""
    return uow.local(SequenceSerials, lambda: SequenceSerials(uow.session))


# --- the batch's prefetch -------------------------------------------------------------------


@handlers.before_batch
async def prefetch(uow: SqlUnitOfWork, events: Sequence[tuple[Envelope, Event]]) -> None:
    await sequence_serials(uow).reserve(await load_batch(uow, events))


async def load_batch(uow: UnitOfWork, events: Sequence[tuple[Envelope, Event]]) -> int:
    """Load the rows a batch touches, one query per table; return how many copies are new.

    (The number of received copies not catalogued yet: the barcode serials to reserve.)
    """
    receipts = [p for _, p in events if isinstance(p, CopiesReceived)]
    new_copies = 0
    if receipts:
        await uow.repo(Bib).find("isbn13", {n.value for p in receipts
                                            if (n := domain.normalize_isbn(p.isbn))})
        await uow.repo(Bib).find("match_key", {k for p in receipts if (
            k := domain.match_key(p.title, p.author, p.year))})
        copy_ids = {c.copy_id for p in receipts for c in p.copies}
        catalogued = await uow.repo(Item).find("copy_id", copy_ids)
        new_copies = len(copy_ids - catalogued.keys())
    await uow.repo(Item).load({p.barcode for _, p in events if isinstance(p, ItemStatusChanged)})
    await uow.repo(Site).load({p.code for _, p in events if isinstance(p, SiteUpserted)})
    return new_copies


# --- bibs -----------------------------------------------------------------------------------


def _announce_bib(uow: UnitOfWork, bib: Bib, cause: Envelope | None) -> None:
    uow.emit(
        BibUpserted(bib_id=bib.bib_id, isbns=[bib.isbn13] if bib.isbn13 else [],
                    title=bib.title, author=bib.author, publisher=bib.publisher, year=bib.year,
                    language=bib.language, classification=bib.classification,
                    subjects=list(bib.subjects) or None),
        subject=bib.bib_id, cause=cause,
    )


def search_text(d: domain.Description | domain.BibData) -> str:
    return domain.search_text(d.title, d.author, d.subjects)


def _describe(bib: Bib) -> domain.Description:
    return domain.Description(
        title=bib.title, author=bib.author, publisher=bib.publisher, year=bib.year,
        language=bib.language, classification=bib.classification,
        classification_scheme=bib.classification_scheme, subjects=tuple(bib.subjects),
        marc=bib.marc)


def _set_description(bib: Bib, d: domain.Description) -> None:
    bib.title, bib.author, bib.publisher, bib.year = d.title, d.author, d.publisher, d.year
    bib.language, bib.subjects = d.language, list(d.subjects)
    bib.classification, bib.classification_scheme = d.classification, d.classification_scheme
    bib.marc = d.marc
    bib.search_text = search_text(d)
    bib.match_key = domain.match_key(d.title, d.author, d.year)


async def find_bib(uow: UnitOfWork, isbn: domain.Isbn | None,
                   key: str | None) -> tuple[Bib | None, str | None]:
    """The bib a title matches, and by what: its ISBN, else its title + author + year.

    A title match is taken only where one side has no ISBN: two different ISBNs under one
    title are two editions, each its own bib.
    """
    bibs = uow.repo(Bib)
    if isbn is not None:
        found = await bibs.get_by("isbn13", isbn.value)
        if found is not None:
            return found, "isbn"
    if key is not None:
        found = await bibs.get_by("match_key", key)
        if found is not None and (isbn is None or found.isbn13 is None):
            return found, "title"
    return None, None


async def upsert_bib(uow: UnitOfWork, data: domain.BibData, *,
                     on_match: domain.OnMatch | None = None,
                     cause: Envelope | None = None) -> tuple[Bib, domain.Outcome, str | None]:
    """The bib this title matches (domain.apply_match on it), or a new one.

    `on_match` None: a receipt's brief data, which never changes a bib it matches.
    Returns the bib, what happened, and the match point. `cataloging.bib_upserted` is
    emitted when the bib is created or changed.
    """
    isbn = domain.normalize_isbn(data.isbn)
    key = domain.match_key(data.title, data.author, data.year)
    bib, matched_by = await find_bib(uow, isbn, key)
    now = utcnow()
    if bib is None:
        bib = Bib(bib_id=new_id(), isbn13=isbn.value if isbn else None,
                  isbn_valid=isbn.valid if isbn else False, title=data.title, created_at=now)
        _set_description(bib, domain.Description.of(data))
        uow.repo(Bib).add(bib)
        _announce_bib(uow, bib, cause)
        return bib, "created", None
    if on_match is None:
        return bib, "kept", matched_by
    outcome, described = domain.apply_match(_describe(bib), domain.Description.of(data),
                                            on_match)
    if bib.isbn13 is None and isbn is not None:  # a title match brings the ISBN it lacked
        bib.isbn13, bib.isbn_valid = isbn.value, isbn.valid
        outcome = "merged" if outcome == "kept" else outcome
    if outcome != "kept":
        _set_description(bib, described)
        bib.updated_at = now
        _announce_bib(uow, bib, cause)
    return bib, outcome, matched_by


# --- call numbers ---------------------------------------------------------------------------


async def shelf_mark_of(uow: UnitOfWork, bib: Bib) -> str:
    """The call number a copy of this title gets: the title's own once it has one, else one
    made from its classification (a new 种次号 for CLC), else a provisional one."""
    if bib.call_number:
        return bib.call_number
    serial = None
    if bib.classification and bib.classification_scheme == "clc":
        serials = uow.repo(ClassSerial)
        await serials.load([bib.classification], lock=True)  # two replicas take turns
        row = await serials.get(bib.classification)
        if row is None:
            row = ClassSerial(class_number=bib.classification, last=0)
            serials.add(row)
        row.last += 1
        serial = row.last
    mark = domain.shelf_mark(classification=bib.classification,
                             scheme=bib.classification_scheme, author=bib.author,
                             title=bib.title, year=bib.year, serial=serial)
    if not domain.is_provisional(mark):
        bib.call_number = mark
    return mark


# --- received copies ------------------------------------------------------------------------


@handlers.on(CopiesReceived)
async def on_copies_received(uow: SqlUnitOfWork, env: Envelope, data: CopiesReceived) -> None:
    """Catalogue the received copies, barcodes drawn from the Postgres sequence."""
    await receive_copies(uow, env, data, sequence_serials(uow))


async def receive_copies(uow: UnitOfWork, env: Envelope, data: CopiesReceived,
                         serials: Serials) -> None:
    """Make one barcoded item per received copy, attached to its title's bib.

    The bib is the one the ISBN (else title + author + year) matches, or a brief one made
    from the order's data. A copy id already catalogued (a receipt sent again under a new
    event id) is skipped; the unique constraint on `copy_id` backs this across processes.
    New items wait in the cataloging queue at the processing center
    (`settings.processing_site`), or are completed at once with
    `settings.catalog_auto_complete`.
    """
    title = domain.BibData(isbn=data.isbn, title=data.title, author=data.author,
                           publisher=data.publisher, year=data.year)
    bib, _, _ = await upsert_bib(uow, title, cause=env)
    items = uow.repo(Item)
    catalogued = await items.find("copy_id", [c.copy_id for c in data.copies])
    new_copies, seen = [], set()
    for copy in data.copies:
        if copy.copy_id not in catalogued and copy.copy_id not in seen:
            new_copies.append(copy)
            seen.add(copy.copy_id)
    skipped = len(data.copies) - len(new_copies)
    if skipped:
        log.info("copies already catalogued; skipped",
                 extra={"order_id": data.order_id, "line_id": data.line_id, "skipped": skipped})
    if not new_copies:
        return
    processing_site = uow.settings.processing_site
    shelf_mark = await shelf_mark_of(uow, bib)
    now = utcnow()
    taken = await serials.take(len(new_copies))
    auto = uow.settings.catalog_auto_complete
    for copy, serial in zip(new_copies, taken, strict=True):
        item = Item(barcode=domain.format_barcode(serial), bib_id=bib.bib_id,
                    copy_id=copy.copy_id, call_number=shelf_mark,
                    owning_branch=copy.owning_branch, site=processing_site,
                    status="in_processing", created_at=now)
        items.add(item)
        if auto:
            _complete(uow, item, bib, env)


# --- the cataloging queue ---------------------------------------------------------------------


def _complete(uow: UnitOfWork, item: Item, bib: Bib, cause: Envelope | None) -> None:
    item.cataloged_at = utcnow()
    uow.emit(
        ItemCataloged(barcode=item.barcode, bib_id=bib.bib_id, isbn=bib.isbn13,
                      title=bib.title, call_number=item.call_number,
                      owning_branch=item.owning_branch, copy_id=item.copy_id,
                      site=item.site),
        subject=item.barcode, cause=cause,
    )


async def _queued(uow: UnitOfWork, barcodes: Sequence[str]) -> dict[str, tuple[Item, Bib]]:
    """The items (locked) and their bibs; raises NotFound naming an unknown barcode."""
    items = uow.repo(Item)
    await items.load(barcodes, lock=True)
    found = {b: item for b in barcodes if (item := await items.get(b)) is not None}
    if missing := [b for b in barcodes if b not in found]:
        raise NotFound(f"no item with barcode {missing[0]!r}")
    await uow.repo(Bib).load({item.bib_id for item in found.values()})  # one query
    out: dict[str, tuple[Item, Bib]] = {}
    for barcode, item in found.items():
        bib = await uow.repo(Bib).get(item.bib_id)
        assert bib is not None  # foreign key
        out[barcode] = (item, bib)
    return out


async def _give_call_number(uow: UnitOfWork, item: Item, bib: Bib) -> None:
    """A provisional call number becomes the title's real one once the title is classified."""
    if domain.is_provisional(item.call_number):
        item.call_number = await shelf_mark_of(uow, bib)


def _not_in_queue(item: Item) -> str | None:
    if item.withdrawn_at is not None:
        return "withdrawn"
    if item.cataloged_at is not None:
        return "already catalogued"
    return None


@dataclass(frozen=True)
class Refusal:
    barcode: str
    reason: str


async def print_labels(uow: UnitOfWork, barcodes: Sequence[str],
                       ) -> tuple[list[Item], list[Refusal]]:
    """Mark these items' spine labels printed; an item without a real call number has no
    label to print yet."""
    printed, refused = [], []
    for barcode, (item, bib) in (await _queued(uow, barcodes)).items():
        if item.withdrawn_at is not None:
            refused.append(Refusal(barcode, "withdrawn"))
            continue
        await _give_call_number(uow, item, bib)
        if domain.is_provisional(item.call_number):
            refused.append(Refusal(barcode, "lacks call_number: classify the title (import "
                                            "its full record) or set the call number"))
        else:
            item.label_printed_at = utcnow()
            printed.append(item)
    return printed, refused


async def complete_items(uow: UnitOfWork, barcodes: Sequence[str], *,
                         cause: Envelope | None = None) -> tuple[list[Item], list[Refusal]]:
    """Take shelf-ready items out of the queue: `cataloging.item_cataloged` for each.

    An item lacking a call number or a printed label stays (its refusal says what it
    lacks); a brief record alone does not hold a book back.
    """
    done, refused = [], []
    for barcode, (item, bib) in (await _queued(uow, barcodes)).items():
        if (why := _not_in_queue(item)) is not None:
            refused.append(Refusal(barcode, why))
            continue
        await _give_call_number(uow, item, bib)
        blocking = [lack for lack in domain.lacks(
            full_record=bib.marc is not None, call_number=item.call_number,
            label_printed=item.label_printed_at is not None) if lack in domain.BLOCKING]
        if blocking:
            refused.append(Refusal(barcode, "lacks " + ", ".join(blocking)))
            continue
        _complete(uow, item, bib, cause)
        done.append(item)
    return done, refused


async def set_call_number(uow: UnitOfWork, barcode: str, call_number: str) -> Item:
    """A cataloger's own call number for one item (also after it was catalogued)."""
    item, _ = (await _queued(uow, [barcode]))[barcode]
    if item.withdrawn_at is not None:
        raise Conflict(f"item {barcode} is withdrawn")
    item.call_number = call_number
    return item


#: Items that are not on a shelf of the network: withdrawing them waits until they are.
NOT_WITHDRAWABLE = {"on_loan": "it is on loan: check it in first",
                    "in_transit": "it is in transit: receive it first",
                    "on_hold_shelf": "it is on the hold shelf for a reader: check it in first"}


async def withdraw_item(uow: UnitOfWork, barcode: str, reason: str) -> Item:
    """Take a copy out of the collection for good (`cataloging.item_withdrawn`)."""
    item, bib = (await _queued(uow, [barcode]))[barcode]
    if item.withdrawn_at is not None:
        raise Conflict(f"item {barcode} was withdrawn already")
    if (why := NOT_WITHDRAWABLE.get(item.status)) is not None:
        raise Conflict(f"item {barcode} can't be withdrawn now: {why}")
    item.withdrawn_at, item.withdrawn_reason, item.status = utcnow(), reason, "withdrawn"
    uow.emit(ItemWithdrawn(barcode=barcode, reason=reason, bib_id=bib.bib_id,
                           owning_branch=item.owning_branch), subject=barcode)
    return item


# --- what the rest of the network says --------------------------------------------------------


@handlers.on(ItemStatusChanged)
async def on_item_status_changed(uow: UnitOfWork, env: Envelope,
                                 data: ItemStatusChanged) -> None:
    """Keep circulation's status and whereabouts for availability in search.

    Unknown barcodes (items catalogued elsewhere) and withdrawn items are ignored; an event
    older than the last one applied does not overwrite it.
    """
    item = await uow.repo(Item).get(data.barcode)
    if item is None or item.withdrawn_at is not None:
        return
    if item.status_at is not None and env.time < item.status_at:
        return
    item.status, item.site, item.status_at = data.status, data.site, env.time


@handlers.on(SiteUpserted)
async def on_site_upserted(uow: UnitOfWork, env: Envelope, data: SiteUpserted) -> None:
    await uow.repo(Site).put(Site(code=data.code, name=data.name, kind=data.kind,
                                  active=data.active))


# --- the bibs' holdings summaries -------------------------------------------------------------

#: Changes (rows of `holdings_change`) one refresh takes at most.
HOLDINGS_REFRESH = 5_000
_TAKE_CHANGES = f"""
SELECT id, bib_id FROM {SCHEMA}.holdings_change ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
"""
_LOCK_BIBS = f"""
SELECT bib_id FROM {SCHEMA}.bib WHERE bib_id = ANY($1::text[]) ORDER BY bib_id
FOR UPDATE SKIP LOCKED
"""
_SUMMARISE = f"""
UPDATE {SCHEMA}.bib b SET owners = s.owners, shelves = s.shelves
  FROM (SELECT t.bib_id,
               coalesce(array_agg(DISTINCT i.owning_branch::text ORDER BY i.owning_branch::text)
                        FILTER (WHERE i.barcode IS NOT NULL), '{{}}') AS owners,
               coalesce(array_agg(DISTINCT i.site::text ORDER BY i.site::text)
                        FILTER (WHERE i.status = 'available'), '{{}}') AS shelves
          FROM unnest($1::text[]) AS t(bib_id)
          LEFT JOIN {SCHEMA}.item i ON i.bib_id = t.bib_id AND i.withdrawn_at IS NULL
         GROUP BY t.bib_id) s
 WHERE b.bib_id = s.bib_id
   AND (b.owners IS DISTINCT FROM s.owners OR b.shelves IS DISTINCT FROM s.shelves)
"""
_DROP_CHANGES = f"""
DELETE FROM {SCHEMA}.holdings_change c WHERE c.id = ANY($1::bigint[])
   AND (c.bib_id = ANY($2::text[])
        OR NOT EXISTS (SELECT 1 FROM {SCHEMA}.bib b WHERE b.bib_id = c.bib_id))
"""


async def refresh_holdings(uow: SqlUnitOfWork, limit: int = HOLDINGS_REFRESH) -> int:
    """Work out again the holdings summary (`owners`, `shelves`) of the bibs whose copies
    changed; return how many changes were taken.

    Nothing here waits for a lock: changes and bibs another refresh or writer holds are
    skipped and stay logged for the next round. The summary is computed after the bibs
    are locked, by a statement that sees every item change committed before it, so a
    change committed later is in the log for the next round: nothing is lost, and search
    is at most one round behind (`Job` every HOLDINGS_EVERY_S).
    """
    driver = await _driver(uow)
    changes = await driver.fetch(_TAKE_CHANGES, limit)
    if not changes:
        return 0
    wanted = sorted({c["bib_id"] for c in changes})
    locked = [r["bib_id"] for r in await driver.fetch(_LOCK_BIBS, wanted)]
    if locked:
        await driver.execute(_SUMMARISE, locked)
    await driver.execute(_DROP_CHANGES, [c["id"] for c in changes], locked)
    return len(changes)


#: How often each replica refreshes the summaries of changed bibs.
HOLDINGS_EVERY_S = 0.5


async def keep_holdings(service: Service) -> None:
    """The job: refresh until the log is drained (a round at a time, each committed)."""
    while True:
        async with service.uow() as uow:
            taken = await refresh_holdings(uow)
        if taken < HOLDINGS_REFRESH:
            return


# --- MARC imports ---------------------------------------------------------------------------


@dataclass
class BibState:
    """A bib an import batch matched or made, as it will be written (with its match key
    and search text, once they are known for its description)."""

    bib_id: str
    isbn13: str | None
    isbn_valid: bool
    description: domain.Description
    new: bool
    changed: bool = False
    key: str | None = None
    text: str | None = None
    #: Its `updated_at` as read (None for a bib never changed since it was made): the
    #: UPDATE writes it only if it is still that.
    seen: datetime | None = None

    def describe(self, description: domain.Description, incoming: domain.Description,
                 like: domain.Prepared) -> None:
        """Take a new description; key and text are the record's (`like`, described as
        `incoming`) when it is the record's."""
        if description is incoming or description == incoming:
            self.key, self.text = like.key, like.search_text
        elif description != self.description:
            self.key = domain.match_key(description.title, description.author,
                                        description.year)
            self.text = search_text(description)
        self.description = description


@dataclass
class ImportResult:
    """Counts of one batch (or a whole import), and its report lines."""

    created: int = 0
    overlaid: int = 0
    merged: int = 0
    kept: int = 0
    rejected: int = 0
    items_created: int = 0
    lines: int = 0

    def count(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


_BIB_COLUMNS = ("bib_id", "isbn13", "isbn_valid", "title", "author", "publisher", "year",
                "language", "classification", "classification_scheme", "subjects",
                "search_text", "match_key", "marc", "created_at")
#: The bibs a batch's ISBNs and title keys match, with what matching reads of them (not the
#: search vector or the holdings summary); subjects as text[]. Unlocked: a bib the batch
#: changes is written only if its `updated_at` is still the one read here (`StaleMatch`).
_MATCH_BIBS = f"""
SELECT bib_id, isbn13, isbn_valid, title, author, publisher, year, language, classification,
       classification_scheme, ARRAY(SELECT jsonb_array_elements_text(subjects)), match_key,
       marc, updated_at
  FROM {SCHEMA}.bib WHERE isbn13 = ANY($1::text[]) OR match_key = ANY($2::text[])
 ORDER BY bib_id
"""
_ITEM_COLUMNS = ("barcode", "bib_id", "call_number", "owning_branch", "site", "status",
                 "created_at", "cataloged_at", "label_printed_at")
_LINE_COLUMNS = ("job_id", "position", "outcome", "bib_id", "matched_by", "reason")
#: Changed bibs, each only as the batch read it: a row another writer changed (or that is
#: not there) in the meantime is left alone, and the count tells (`StaleMatch`).
_UPDATE_BIBS = f"""
UPDATE {SCHEMA}.bib AS b SET isbn13 = v.isbn13, isbn_valid = v.isbn_valid, title = v.title,
  author = v.author, publisher = v.publisher, year = v.year, language = v.language,
  classification = v.classification, classification_scheme = v.classification_scheme,
  subjects = v.subjects, search_text = v.search_text, match_key = v.match_key,
  marc = v.marc, updated_at = v.updated_at
FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::text[], $6::text[],
            $7::int[], $8::text[], $9::text[], $10::text[], $11::text[]::jsonb[], $12::text[],
            $13::text[], $14::bytea[], $15::timestamptz[], $16::timestamptz[])
  AS v(bib_id, isbn13, isbn_valid, title, author, publisher, year, language, classification,
       classification_scheme, subjects, search_text, match_key, marc, updated_at, seen)
WHERE b.bib_id = v.bib_id AND b.updated_at IS NOT DISTINCT FROM v.seen
"""

#: A record of an import batch by its position in the file: prepared by the reader, or
#: why it could not be read (a rejection).
Record = tuple[int, "domain.Prepared | str"]


class StaleMatch(Exception):
    """A bib the batch matched changed (or went) after it was read: the batch is planned
    again from what is committed now."""


@dataclass
class ImportPlan:
    """One batch matched and worked out, not yet written (`plan_import`, `write_import`).

    `carried` is what the next batch starts from while this one is still being written:
    every bib this batch made or changed as it will be once committed.
    """

    records: Sequence[Record]
    now: datetime
    touched: dict[str, BibState]
    outcome_of: dict[int, tuple[str, BibState | None, str | None]]
    notes: dict[int, str]
    holdings: list[tuple[int, BibState, domain.Holding]]

    def carried(self) -> list[BibState]:
        return [replace(s, new=False, changed=False,
                        seen=None if s.new else self.now if s.changed else s.seen)
                for s in self.touched.values()]


def match_points(records: Sequence[Record]) -> tuple[list[str], list[str]]:
    """The ISBNs and title keys a batch's records are matched by (`_MATCH_BIBS`' $1, $2)."""
    isbns: set[str] = set()
    keys: set[str] = set()
    for _, p in records:
        if isinstance(p, str):
            continue
        if p.isbn is not None:
            isbns.add(p.isbn.value)
        if p.key is not None:
            keys.add(p.key)
    return sorted(isbns), sorted(keys)


async def read_matches(driver: Any, records: Sequence[Record]) -> list[Any]:
    """The committed bibs a batch's records may match, read on `driver` (asyncpg)."""
    isbns, keys = match_points(records)
    if not (isbns or keys):
        return []
    return list(await driver.fetch(_MATCH_BIBS, isbns, keys))


def plan_import(records: Sequence[Record], rows: Sequence[Any], *,
                on_match: domain.OnMatch, carried: Sequence[BibState] = ()) -> ImportPlan:
    """Match a batch against the bibs read (`read_matches`) and those the batch before it
    carries (made or changed, maybe not committed yet), and work out every record's outcome.

    CPU only, no I/O: it runs in a thread while the batch before is written. Records
    matching each other within the batch meet in one bib. The carried states are taken
    over (changed in place): `ImportPlan.carried` makes them for this one use.
    """
    parsed = [(pos, r) for pos, r in records if not isinstance(r, str)]
    known: dict[str, BibState] = {}
    for (bib_id, isbn13, isbn_valid, title, author, publisher, year, language,
         classification, scheme, subjects, match_key, marc, updated_at) in rows:
        known[bib_id] = BibState(bib_id, isbn13, isbn_valid, domain.Description(
            title=title, author=author, publisher=publisher, year=year,
            language=language, classification=classification,
            classification_scheme=scheme, subjects=tuple(subjects), marc=marc),
            new=False, key=match_key, seen=updated_at)
    for state in carried:  # newer than what was read: the read may predate its commit
        known[state.bib_id] = state
    by_isbn: dict[str, BibState] = {}
    by_key: dict[str, BibState] = {}
    for bib_id in sorted(known):
        state = known[bib_id]
        if state.isbn13 is not None:
            by_isbn.setdefault(state.isbn13, state)
        if state.key is not None:
            by_key.setdefault(state.key, state)
    plan = ImportPlan(records=records, now=utcnow(), touched={}, outcome_of={}, notes={},
                      holdings=[])
    notes, holdings, outcome_of = plan.notes, plan.holdings, plan.outcome_of
    for pos, record in records:
        if isinstance(record, str):
            outcome_of[pos] = ("rejected", None, None)
            notes[pos] = record
    for pos, prepared in parsed:
        isbn, key = prepared.isbn, prepared.key
        found: BibState | None = None
        matched_by: str | None = None
        if isbn is not None and isbn.value in by_isbn:
            found, matched_by = by_isbn[isbn.value], "isbn"
        elif key is not None and key in by_key and (isbn is None or by_key[key].isbn13 is None):
            found, matched_by = by_key[key], "title"
        incoming = domain.Description.of(prepared.data)
        if found is None:
            state = BibState(new_id(), isbn.value if isbn else None,
                              isbn.valid if isbn else False, incoming, new=True, key=key,
                              text=prepared.search_text)
            outcome: str = "created"
        else:
            state = found
            outcome, described = domain.apply_match(state.description, incoming, on_match)
            differs = described != state.description
            state.describe(described, incoming, prepared)
            if state.isbn13 is None and isbn is not None:
                state.isbn13, state.isbn_valid = isbn.value, isbn.valid
                outcome, differs = ("merged" if outcome == "kept" else outcome), True
            # A record overlaid with what the bib says already changes nothing: no write,
            # no event (a file sent twice costs a lookup per record).
            state.changed = state.changed or differs
        if state.isbn13 is not None:
            by_isbn.setdefault(state.isbn13, state)
        if state.key is not None:
            by_key.setdefault(state.key, state)
        if key is not None:
            by_key.setdefault(key, state)
        plan.touched[state.bib_id] = state
        outcome_of[pos] = (outcome, state, matched_by)
        for holding in prepared.data.holdings:
            if holding.barcode or outcome == "created":
                holdings.append((pos, state, holding))
            else:  # sent again, it would be a second copy: nothing tells them apart
                skipped = (f"holding at {holding.branch!r} without a barcode skipped: the "
                           "title was in the catalogue already")
                notes[pos] = f"{notes[pos]}; {skipped}" if pos in notes else skipped
    return plan


async def write_import(uow: SqlUnitOfWork, plan: ImportPlan,
                       job_id: str | None = None) -> ImportResult:
    """Write a planned batch in the caller's transaction: new bibs by COPY, changed ones by
    one UPDATE over arrays, report lines by COPY — a few round trips whatever its size.
    Holdings in the records become catalogued items (`import_holdings`).

    Raises StaleMatch when a changed bib is no longer as the plan read it.
    """
    result = ImportResult()
    states = plan.touched.values()
    changed = [s for s in states if not s.new and s.changed]
    await _write_bibs(uow, [s for s in states if s.new], changed, plan.now)
    uow.emit_bulk(BibUpserted, (_upserted(state) for state in states
                                if state.new or state.changed))
    notes = dict(plan.notes)
    if plan.holdings:
        result.items_created = await import_holdings(uow, plan.holdings, notes)
    lines = []
    for pos in sorted(plan.outcome_of):
        happened, made, by = plan.outcome_of[pos]
        result.count(happened)
        lines.append((job_id, pos, happened, made.bib_id if made else None, by,
                      notes.get(pos)))
    if job_id is not None and lines:
        await _copy(uow, "importline", _LINE_COLUMNS, lines)
        result.lines = len(lines)
    return result


def _upserted(state: BibState) -> tuple[str, dict[str, Any]]:
    """A `cataloging.bib_upserted` payload as JSON values, from a description checked
    already (an import announces every bib it makes or changes: `emit_bulk`)."""
    d = state.description
    return state.bib_id, {
        "bib_id": state.bib_id, "isbns": [state.isbn13] if state.isbn13 else [],
        "title": d.title, "author": d.author, "publisher": d.publisher, "year": d.year,
        "language": d.language, "classification": d.classification,
        "subjects": list(d.subjects) or None}


async def _driver(uow: SqlUnitOfWork) -> Any:
    """The transaction's asyncpg connection, for COPY and array statements."""
    connection = await uow.session.connection()
    return (await connection.get_raw_connection()).driver_connection


async def _copy(uow: SqlUnitOfWork, table: str, columns: Sequence[str],
                rows: list[tuple[Any, ...]]) -> None:
    await (await _driver(uow)).copy_records_to_table(
        table, schema_name=SCHEMA, columns=list(columns), records=rows)


async def _write_bibs(uow: SqlUnitOfWork, new: list[BibState],
                      changed: list[BibState], now: datetime) -> None:
    if new:
        await _copy(uow, "bib", _BIB_COLUMNS, [
            (s.bib_id, s.isbn13, s.isbn_valid, d.title, d.author, d.publisher, d.year,
             d.language, d.classification, d.classification_scheme, json.dumps(d.subjects),
             s.text if s.text is not None else search_text(d), s.key, d.marc, now)
            for s in new if (d := s.description)])
    if changed:
        columns: list[list[Any]] = [[] for _ in range(16)]
        for s in changed:
            d = s.description
            for column, value in zip(columns, (
                    s.bib_id, s.isbn13, s.isbn_valid, d.title, d.author, d.publisher, d.year,
                    d.language, d.classification, d.classification_scheme,
                    json.dumps(d.subjects), s.text if s.text is not None else search_text(d),
                    s.key, d.marc, now, s.seen), strict=True):
                column.append(value)
        status = await (await _driver(uow)).execute(_UPDATE_BIBS, *columns)
        updated = int(status.rsplit(" ", 1)[-1])
        if updated != len(changed):
            raise StaleMatch(f"{len(changed) - updated} of the {len(changed)} bibs the batch "
                             "changes were changed by another writer since it read them")


async def import_holdings(uow: SqlUnitOfWork,
                          holdings: Sequence[tuple[int, BibState, domain.Holding]],
                          notes: dict[int, str]) -> int:
    """Items for the copies imported records say a branch holds: catalogued already (they
    are on that branch's shelf), so each is announced with `cataloging.item_cataloged`.

    A holding naming a branch the network does not have, or a barcode already in use, is
    skipped with a note on its record's report line. Copies without a barcode get one.
    """
    driver = await _driver(uow)
    branches = sorted({h.branch for _, _, h in holdings})
    known_sites = {r["code"] for r in await driver.fetch(
        f"SELECT code FROM {SCHEMA}.site WHERE code = ANY($1::text[])", branches)}
    given = sorted({h.barcode for _, _, h in holdings if h.barcode})
    taken_codes = {r["barcode"] for r in await driver.fetch(
        f"SELECT barcode FROM {SCHEMA}.item WHERE barcode = ANY($1::text[])", given)}
    accepted: list[tuple[int, BibState, domain.Holding]] = []
    for pos, state, holding in holdings:
        problem = None
        if holding.branch not in known_sites:
            problem = f"holding at unknown branch {holding.branch!r} skipped"
        elif holding.barcode and holding.barcode in taken_codes:
            problem = f"holding {holding.barcode!r} skipped: that barcode is already an item"
        elif holding.barcode and holding.barcode.startswith(domain.BARCODE_PREFIX):
            # The network's own series comes from the sequence alone: a legacy code in it
            # would one day meet a new item's barcode.
            problem = (f"holding {holding.barcode!r} skipped: barcodes starting "
                       f"{domain.BARCODE_PREFIX} are the network's own series; leave the "
                       "barcode out to have one given")
        if problem:
            notes[pos] = f"{notes[pos]}; {problem}" if pos in notes else problem
            continue
        if holding.barcode:
            taken_codes.add(holding.barcode)
        accepted.append((pos, state, holding))
    if not accepted:
        return 0
    serials = await sequence_serials(uow).take(sum(1 for *_, h in accepted if not h.barcode))
    fresh = iter(serials)
    now = utcnow()
    rows = []
    for _, state, holding in accepted:
        d = state.description
        barcode = holding.barcode or domain.format_barcode(next(fresh))
        call_number = holding.call_number or domain.shelf_mark(
            classification=d.classification, scheme=d.classification_scheme, author=d.author,
            title=d.title, year=d.year)
        rows.append((barcode, state.bib_id, call_number, holding.branch, holding.branch,
                     "available", now, now, now))
        uow.emit(ItemCataloged(barcode=barcode, bib_id=state.bib_id, isbn=state.isbn13,
                               title=d.title, call_number=call_number,
                               owning_branch=holding.branch, site=holding.branch),
                 subject=barcode)
    await _copy(uow, "item", _ITEM_COLUMNS, rows)
    return len(rows)
