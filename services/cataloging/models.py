"""Cataloging's tables (schema `cataloging`): bib records, items, the network's sites.

Item barcodes come from the Postgres sequence `cataloging.barcode_seq` (created by the
migration), so every process of the service draws distinct serials.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, ForeignKey, Index, LargeBinary, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field

from shared.service.rows import Row

SCHEMA = "cataloging"
BARCODE_SEQUENCE = f"{SCHEMA}.barcode_seq"


def _ts(nullable: bool = True) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable)


class Bib(Row, table=True):
    """One title: the bibliographic record every copy of it points to.

    `isbn13` is the normalised ISBN-13, or the given digits when `isbn_valid` is False
    (see domain.normalize_isbn); NULL only for a title received without any ISBN.
    """

    __table_args__ = (
        Index("bib_search", text("to_tsvector('simple'::regconfig, search_text)"),
              postgresql_using="gin"),
        Index("bib_title", text("lower(title)")),
        Index("bib_classification", "classification",
              postgresql_ops={"classification": "text_pattern_ops"}),
        {"schema": SCHEMA},
    )

    bib_id: str = Field(primary_key=True)
    isbn13: str | None = Field(default=None, unique=True)
    isbn_valid: bool = True
    title: str
    author: str | None = None
    publisher: str | None = None
    year: int | None = None
    #: ISO 639-2 code (MARC 21 008/35-37 or 041$a; UNIMARC 101$a).
    language: str | None = None
    #: The class number and its scheme: `clc` (中图法: CNMARC 690, MARC 21 084 $2 clc),
    #: `ddc` (082 / 676) or `lcc` (050 / 680), the first found in that order.
    classification: str | None = None
    classification_scheme: str | None = None
    subjects: list[str] = Field(default=[], sa_column=Column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb")))
    #: What search finds the bib by (domain.search_tokens of title, author and subjects),
    #: indexed as `to_tsvector('simple', search_text)` (GIN).
    search_text: str = Field(default="", sa_column=Column(
        Text, nullable=False, server_default=""))
    #: The record as imported (ISO 2709), kept so a later overlay or export starts from
    #: what the agency sent; NULL for a brief bib made from an order.
    marc: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime = Field(sa_column=_ts(False))
    updated_at: datetime | None = Field(default=None, sa_column=_ts())


class Item(Row, table=True):
    """One copy on a shelf somewhere: its barcode, call number and owning branch.

    `status` and `site` are circulation's (kept from `circulation.item_status_changed` for
    availability in search); cataloging only sets them when the copy is catalogued.
    """

    __table_args__ = {"schema": SCHEMA}

    barcode: str = Field(primary_key=True)
    bib_id: str = Field(
        sa_column=Column(String, ForeignKey(f"{SCHEMA}.bib.bib_id"), nullable=False, index=True)
    )
    copy_id: str | None = Field(default=None, unique=True)
    call_number: str
    owning_branch: str = Field(index=True)
    site: str
    status: str = "in_processing"
    status_at: datetime | None = Field(default=None, sa_column=_ts())
    created_at: datetime = Field(sa_column=_ts(False))


class Site(Row, table=True):
    """What cataloging keeps of the network: names for holdings displays."""

    __table_args__ = {"schema": SCHEMA}

    code: str = Field(primary_key=True)
    name: str
    kind: str
    active: bool = True
