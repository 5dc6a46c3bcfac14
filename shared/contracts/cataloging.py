"""Events the cataloging center publishes on cataloging.bibs and cataloging.items."""

from __future__ import annotations

from shared.contracts.registry import CATALOGING_BIBS, CATALOGING_ITEMS, Event, event

Code = str


@event("cataloging.bib_upserted", topic=CATALOGING_BIBS)
class BibUpserted(Event):
    bib_id: str
    isbns: list[str]
    title: str
    author: str | None = None
    publisher: str | None = None
    year: int | None = None
    language: str | None = None
    classification: str | None = None
    subjects: list[str] | None = None


@event("cataloging.item_cataloged", topic=CATALOGING_ITEMS)
class ItemCataloged(Event):
    barcode: str
    bib_id: str
    isbn: str | None = None
    title: str
    call_number: str
    owning_branch: Code
    copy_id: str | None = None
    site: Code
    item_type: str | None = None


@event("cataloging.item_withdrawn", topic=CATALOGING_ITEMS)
class ItemWithdrawn(Event):
    barcode: str
    reason: str
    bib_id: str | None = None
    owning_branch: Code | None = None
