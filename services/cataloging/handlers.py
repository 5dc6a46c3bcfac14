"""Cataloging's use cases: each runs inside the caller's transaction (state + inbox + outbox).

A consumer hands a whole fetched batch to one transaction. `prefetch` loads the bibs (by
normalised ISBN) and items (by copy id or barcode) the batch touches in a few queries and
reserves the barcode serials it will need in one round trip. Bibs and items are then
looked up through per-transaction dicts in `uow.cache`, which also hold the rows created
earlier in the same batch: two receipts of one new title in a batch share one bib.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import text
from sqlmodel import col, select

from services.cataloging import domain
from services.cataloging.models import BARCODE_SEQUENCE, Bib, Item, Site
from shared.consumer import Handler
from shared.events import (
    BibUpserted,
    CopiesReceived,
    Envelope,
    ItemCataloged,
    ItemStatusChanged,
    Payload,
    SiteUpserted,
    new_id,
    utcnow,
)
from shared.outbox import UnitOfWork

log = logging.getLogger(__name__)

DEFAULT_PROCESSING_SITE = "JX-CENTRAL"

_BIB_BY_ISBN = "bib_by_isbn"
_ITEM_BY_COPY = "item_by_copy"
_ITEM_BY_BARCODE = "items_by_barcode"
_SERIALS = "barcode_serials"


# --- per-transaction lookups ----------------------------------------------------------------


async def _bibs_by_isbn(uow: UnitOfWork, isbns: Iterable[str]) -> dict[str, Bib | None]:
    """Bibs by ISBN-13 from the batch's map, asking the database only for unseen ISBNs."""
    known: dict[str, Bib | None] = uow.cache.setdefault(_BIB_BY_ISBN, {})
    missing = {i for i in isbns if i not in known}
    if missing:
        rows = (await uow.session.exec(select(Bib).where(col(Bib.isbn13).in_(missing)))).all()
        found = {b.isbn13: b for b in rows}
        known.update({i: found.get(i) for i in missing})
    return known


async def _items_by_copy(uow: UnitOfWork, copy_ids: Iterable[str]) -> dict[str, Item | None]:
    known: dict[str, Item | None] = uow.cache.setdefault(_ITEM_BY_COPY, {})
    missing = {c for c in copy_ids if c not in known}
    if missing:
        rows = (await uow.session.exec(select(Item).where(col(Item.copy_id).in_(missing)))).all()
        found = {i.copy_id: i for i in rows}
        known.update({c: found.get(c) for c in missing})
    return known


async def _reserve_serials(uow: UnitOfWork, count: int) -> None:
    """Draw `count` serials from the barcode sequence in one round trip (gaps are harmless)."""
    if count <= 0:
        return
    connection = await uow.session.connection()  # Core SQL inside the batch's transaction
    result = await connection.execute(
        text(f"SELECT nextval('{BARCODE_SEQUENCE}') FROM generate_series(1, :n)"), {"n": count}
    )
    uow.cache.setdefault(_SERIALS, []).extend(int(row[0]) for row in result)


async def _next_barcodes(uow: UnitOfWork, count: int) -> list[str]:
    pool: list[int] = uow.cache.setdefault(_SERIALS, [])
    if len(pool) < count:
        await _reserve_serials(uow, count - len(pool))
    taken, uow.cache[_SERIALS] = pool[:count], pool[count:]
    return [domain.format_barcode(serial) for serial in taken]


async def prefetch(uow: UnitOfWork, events: Sequence[tuple[Envelope, Payload]]) -> None:
    receipts = [p for _, p in events if isinstance(p, CopiesReceived)]
    if receipts:
        isbns = {n.value for p in receipts if (n := domain.normalize_isbn(p.isbn))}
        await _bibs_by_isbn(uow, isbns)
        copy_ids = [c.copy_id for p in receipts for c in p.copies]
        known = await _items_by_copy(uow, copy_ids)
        await _reserve_serials(uow, len({c for c in copy_ids if known.get(c) is None}))
    barcodes = {p.barcode for _, p in events if isinstance(p, ItemStatusChanged)}
    if barcodes:
        rows = await uow.session.exec(select(Item).where(col(Item.barcode).in_(barcodes)))
        known = uow.cache.setdefault(_ITEM_BY_BARCODE, {})
        known.update({b: None for b in barcodes})
        known.update({i.barcode: i for i in rows})
    codes = {p.code for _, p in events if isinstance(p, SiteUpserted)}
    if codes:
        await uow.session.exec(select(Site).where(col(Site.code).in_(codes)))


# --- bibs -----------------------------------------------------------------------------------


def _announce_bib(uow: UnitOfWork, bib: Bib, cause: Envelope | None) -> None:
    uow.emit(
        "cataloging.bib_upserted", bib.bib_id,
        BibUpserted(bib_id=bib.bib_id, isbns=[bib.isbn13] if bib.isbn13 else [],
                    title=bib.title, author=bib.author, publisher=bib.publisher, year=bib.year),
        cause=cause,
    )


async def upsert_bib(uow: UnitOfWork, data: domain.BibData, *, overwrite: bool,
                     cause: Envelope | None = None) -> tuple[Bib, bool]:
    """The bib for this ISBN, created if new; `overwrite` replaces its descriptive fields.

    Returns the bib and whether it was created. `cataloging.bib_upserted` is emitted when
    the bib is created or overwritten.
    """
    isbn = domain.normalize_isbn(data.isbn)
    bib = None
    if isbn is not None:
        bib = (await _bibs_by_isbn(uow, [isbn.value]))[isbn.value]
    now = utcnow()
    created = bib is None
    if bib is None:
        bib = Bib(bib_id=new_id(), isbn13=isbn.value if isbn else None,
                  isbn_valid=isbn.valid if isbn else False, title=data.title,
                  author=data.author, publisher=data.publisher, year=data.year, created_at=now)
        uow.session.add(bib)
        if isbn is not None:
            uow.cache[_BIB_BY_ISBN][isbn.value] = bib
    elif overwrite:
        bib.title, bib.author = data.title, data.author
        bib.publisher, bib.year = data.publisher, data.year
        bib.updated_at = now
    if created or overwrite:
        _announce_bib(uow, bib, cause)
    return bib, created


# --- received copies ------------------------------------------------------------------------


async def on_copies_received(uow: UnitOfWork, env: Envelope, data: CopiesReceived, *,
                             processing_site: str = DEFAULT_PROCESSING_SITE) -> None:
    """Catalogue each received copy once: one bib per title, one barcoded item per copy.

    A copy id already catalogued (a receipt sent again under a new event id) is skipped;
    the unique constraint on `copy_id` backs this check across processes.
    """
    title = domain.BibData(isbn=data.isbn, title=data.title, author=data.author,
                           publisher=data.publisher, year=data.year)
    bib, _ = await upsert_bib(uow, title, overwrite=False, cause=env)
    known = await _items_by_copy(uow, [c.copy_id for c in data.copies])
    new_copies, seen = [], set()
    for copy in data.copies:
        if known.get(copy.copy_id) is None and copy.copy_id not in seen:
            new_copies.append(copy)
            seen.add(copy.copy_id)
    skipped = len(data.copies) - len(new_copies)
    if skipped:
        log.info("copies already catalogued; skipped",
                 extra={"order_id": data.order_id, "line_id": data.line_id, "skipped": skipped})
    if not new_copies:
        return
    shelf_mark = domain.call_number(author=bib.author, title=bib.title, year=bib.year)
    now = utcnow()
    for copy, barcode in zip(new_copies, await _next_barcodes(uow, len(new_copies)), strict=True):
        item = Item(barcode=barcode, bib_id=bib.bib_id, copy_id=copy.copy_id,
                    call_number=shelf_mark, owning_branch=copy.owning_branch,
                    site=processing_site, status="in_processing", created_at=now)
        uow.session.add(item)
        known[copy.copy_id] = item
        uow.emit(
            "cataloging.item_cataloged", barcode,
            ItemCataloged(barcode=barcode, bib_id=bib.bib_id, isbn=bib.isbn13, title=bib.title,
                          call_number=shelf_mark, owning_branch=copy.owning_branch,
                          copy_id=copy.copy_id, site=processing_site),
            cause=env,
        )


# --- what the rest of the network says --------------------------------------------------------


async def on_item_status_changed(uow: UnitOfWork, env: Envelope, data: ItemStatusChanged) -> None:
    """Keep circulation's status and whereabouts for availability in search.

    Unknown barcodes (items catalogued elsewhere) are ignored; an event older than the
    last one applied does not overwrite it.
    """
    known: dict[str, Item | None] = uow.cache.get(_ITEM_BY_BARCODE, {})
    item = known[data.barcode] if data.barcode in known else \
        await uow.session.get(Item, data.barcode)
    if item is None:
        return
    if item.status_at is not None and env.time < item.status_at:
        return
    item.status, item.site, item.status_at = data.status, data.site, env.time


async def on_site_upserted(uow: UnitOfWork, env: Envelope, data: SiteUpserted) -> None:
    await uow.session.merge(Site(code=data.code, name=data.name, kind=data.kind,
                                 active=data.active))


# --- MARC imports ---------------------------------------------------------------------------


@dataclass
class ImportResult:
    imported: int = 0
    updated: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)


async def import_bibs(uow: UnitOfWork, records: Sequence[domain.BibData | str]) -> ImportResult:
    """Create or update one bib per record, matched by ISBN; a string is a skip reason.

    An imported record is authoritative over what a receipt said, so it overwrites the
    bib's title, author, publisher and year.
    """
    result = ImportResult()
    isbns = {n.value for r in records if isinstance(r, domain.BibData)
             if (n := domain.normalize_isbn(r.isbn))}
    await _bibs_by_isbn(uow, isbns)
    for index, record in enumerate(records):
        if isinstance(record, str):
            result.skipped.append({"index": index, "reason": record})
            continue
        _, created = await upsert_bib(uow, record, overwrite=True)
        if created:
            result.imported += 1
        else:
            result.updated += 1
    return result


def make_handlers(processing_site: str = DEFAULT_PROCESSING_SITE) -> dict[str, Handler]:
    """The event handlers, with the processing center new copies are catalogued at."""
    return {
        "acquisition.copies_received": partial(on_copies_received,
                                               processing_site=processing_site),
        "circulation.item_status_changed": on_item_status_changed,
        "network.site_upserted": on_site_upserted,
    }


HANDLERS = make_handlers()
