"""Cataloging's use cases: each runs inside the caller's transaction (state + inbox + outbox).

A consumer hands a whole fetched batch to one unit of work. `prefetch` loads the bibs (by
normalised ISBN), items (by copy id or barcode) and sites the batch touches in a few
queries and reserves the barcode serials it will need in one round trip; the handlers then
find them without asking the database one by one. Rows created earlier in the same batch
are found the same way: two receipts of one new title in a batch share one bib.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from sqlalchemy import text
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from services.cataloging import domain
from services.cataloging.models import BARCODE_SEQUENCE, Bib, Item, Site
from shared.contracts import Envelope, Event, new_id, utcnow
from shared.contracts.acquisition import CopiesReceived
from shared.contracts.cataloging import BibUpserted, ItemCataloged
from shared.contracts.circulation import ItemStatusChanged
from shared.contracts.logistics import SiteUpserted
from shared.messaging.consumer import Handlers
from shared.messaging.unit_of_work import SqlUnitOfWork, UnitOfWork

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


def _search_text(data: domain.BibData) -> str:
    return " ".join(domain.search_tokens(data.title, data.author, *data.subjects))


async def upsert_bib(uow: UnitOfWork, data: domain.BibData, *, overwrite: bool,
                     cause: Envelope | None = None) -> tuple[Bib, bool]:
    """The bib for this ISBN, created if new; `overwrite` replaces its descriptive fields.

    Returns the bib and whether it was created. `cataloging.bib_upserted` is emitted when
    the bib is created or overwritten.
    """
    bibs = uow.repo(Bib)
    isbn = domain.normalize_isbn(data.isbn)
    bib = await bibs.get_by("isbn13", isbn.value) if isbn is not None else None
    now = utcnow()
    created = bib is None
    if bib is None:
        bib = Bib(bib_id=new_id(), isbn13=isbn.value if isbn else None,
                  isbn_valid=isbn.valid if isbn else False, title=data.title,
                  author=data.author, publisher=data.publisher, year=data.year,
                  language=data.language, classification=data.classification,
                  classification_scheme=data.classification_scheme,
                  subjects=list(data.subjects), marc=data.marc, created_at=now,
                  search_text=_search_text(data))
        bibs.add(bib)
    elif overwrite:  # a full record replaces a brief one (or an older import) whole
        bib.title, bib.author = data.title, data.author
        bib.publisher, bib.year = data.publisher, data.year
        bib.language, bib.subjects = data.language, list(data.subjects)
        bib.classification = data.classification
        bib.classification_scheme = data.classification_scheme
        bib.marc = data.marc
        bib.search_text = _search_text(data)
        bib.updated_at = now
    if created or overwrite:
        _announce_bib(uow, bib, cause)
    return bib, created


# --- received copies ------------------------------------------------------------------------


@handlers.on(CopiesReceived)
async def on_copies_received(uow: SqlUnitOfWork, env: Envelope, data: CopiesReceived) -> None:
    """Catalogue the received copies, barcodes drawn from the Postgres sequence."""
    await receive_copies(uow, env, data, sequence_serials(uow))


async def receive_copies(uow: UnitOfWork, env: Envelope, data: CopiesReceived,
                         serials: Serials) -> None:
    """Catalogue each received copy once: one bib per title, one barcoded item per copy.

    A copy id already catalogued (a receipt sent again under a new event id) is skipped;
    the unique constraint on `copy_id` backs this check across processes. New items wait
    at the processing center this deployment serves (`settings.processing_site`).
    """
    title = domain.BibData(isbn=data.isbn, title=data.title, author=data.author,
                           publisher=data.publisher, year=data.year)
    bib, _ = await upsert_bib(uow, title, overwrite=False, cause=env)
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
    shelf_mark = domain.call_number(author=bib.author, title=bib.title, year=bib.year,
                                    classification=bib.classification)
    now = utcnow()
    taken = await serials.take(len(new_copies))
    for copy, serial in zip(new_copies, taken, strict=True):
        barcode = domain.format_barcode(serial)
        items.add(Item(barcode=barcode, bib_id=bib.bib_id, copy_id=copy.copy_id,
                       call_number=shelf_mark, owning_branch=copy.owning_branch,
                       site=processing_site, status="in_processing", created_at=now))
        uow.emit(
            ItemCataloged(barcode=barcode, bib_id=bib.bib_id, isbn=bib.isbn13, title=bib.title,
                          call_number=shelf_mark, owning_branch=copy.owning_branch,
                          copy_id=copy.copy_id, site=processing_site),
            subject=barcode, cause=env,
        )


# --- what the rest of the network says --------------------------------------------------------


@handlers.on(ItemStatusChanged)
async def on_item_status_changed(uow: UnitOfWork, env: Envelope,
                                 data: ItemStatusChanged) -> None:
    """Keep circulation's status and whereabouts for availability in search.

    Unknown barcodes (items catalogued elsewhere) are ignored; an event older than the
    last one applied does not overwrite it.
    """
    item = await uow.repo(Item).get(data.barcode)
    if item is None:
        return
    if item.status_at is not None and env.time < item.status_at:
        return
    item.status, item.site, item.status_at = data.status, data.site, env.time


@handlers.on(SiteUpserted)
async def on_site_upserted(uow: UnitOfWork, env: Envelope, data: SiteUpserted) -> None:
    await uow.repo(Site).put(Site(code=data.code, name=data.name, kind=data.kind,
                                  active=data.active))


# --- MARC imports ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """A record of an import that made no bib: its place in the file, and why."""

    index: int
    reason: str


@dataclass
class ImportResult:
    imported: int = 0
    updated: int = 0
    kept: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def add(self, other: ImportResult) -> None:
        self.imported += other.imported
        self.updated += other.updated
        self.kept += other.kept
        self.skipped += other.skipped


async def import_bibs(uow: UnitOfWork, records: Sequence[domain.BibData | str], *,
                      overlay: bool = True, first_index: int = 0) -> ImportResult:
    """Create or update one bib per record, matched by ISBN; a string is a skip reason.

    With `overlay` an imported record is authoritative over what a receipt or an earlier
    import said, so it replaces the bib's fields; without it a matched bib is kept as it
    is. `first_index` is the position in the file of the first of these records.
    """
    result = ImportResult()
    await uow.repo(Bib).find("isbn13", {n.value for r in records
                                        if isinstance(r, domain.BibData)
                                        if (n := domain.normalize_isbn(r.isbn))})
    for index, record in enumerate(records, start=first_index):
        if isinstance(record, str):
            result.skipped.append(Skipped(index, record))
            continue
        _, created = await upsert_bib(uow, record, overwrite=overlay)
        if created:
            result.imported += 1
        elif overlay:
            result.updated += 1
        else:
            result.kept += 1
    return result
