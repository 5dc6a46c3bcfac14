"""Cataloging's tables (schema `cataloging`): bib records, items, the network's sites.

Item barcodes come from the Postgres sequence `cataloging.barcode_seq` (created by the
migration), so every process of the service draws distinct serials.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
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
    #: What search finds the bib by (domain.search_tokens of title, author and subjects);
    #: Postgres keeps its tsvector in `search_vector` (GIN), see below.
    search_text: str = Field(default="", sa_column=Column(
        Text, nullable=False, server_default=""))
    #: The second match point (domain.match_key: normalised title|author|year).
    match_key: str | None = Field(default=None, index=True)
    #: The title's shelf mark once one of its copies was given a real one (class number +
    #: 种次号 or Cutter); later copies take the same.
    call_number: str | None = None
    #: The record as imported (ISO 2709), kept so a later overlay or export starts from
    #: what the agency sent; NULL for a brief bib made from an order.
    marc: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime = Field(sa_column=_ts(False))
    updated_at: datetime | None = Field(default=None, sa_column=_ts())


#: Columns Postgres keeps itself, read by search and never written by the service, so they
#: are in the table but not on the model:
#: - `search_vector`: to_tsvector('simple', search_text), stored so a search reads it rather
#:   than recomputing it for every candidate row; `search_size`: how many tokens the bib is
#:   found by (search ranks the titles a query makes up most of first).
#: - `owners` / `shelves`: the branches owning a copy of the title (withdrawn ones aside) /
#:   the sites with a copy on the shelf now, so search filters and counts facets from the
#:   bib rows alone (GIN indexes, no per-match item lookups). Kept by
#:   handlers.refresh_holdings from the bibs `HoldingsChange` lists.
bib_table: Table = Bib.__table__  # type: ignore[attr-defined]
bib_table.append_column(Column(
    "search_vector", TSVECTOR,
    Computed("to_tsvector('simple'::regconfig, search_text)", persisted=True),
    nullable=True))
bib_table.append_column(Column(
    "search_size", SmallInteger,
    Computed("array_length(string_to_array(search_text, ' '::text), 1)",
             persisted=True), nullable=True))
for _name in ("owners", "shelves"):
    bib_table.append_column(Column(_name, ARRAY(Text), nullable=False,
                              server_default=text("'{}'::text[]")))
Index("bib_vector", bib_table.c.search_vector, postgresql_using="gin")
# Only titles with copies are in these: an empty array is an index entry too, which every
# bib an import makes or overlays would pay for. Queries say `cardinality(...) > 0`.
for _name in ("owners", "shelves"):
    Index(f"bib_{_name}", bib_table.c[_name], postgresql_using="gin",
          postgresql_where=func.cardinality(bib_table.c[_name]) > 0)


class HoldingsChange(Row, table=True):
    """A bib whose copies changed (a trigger on `item` adds one row per bib a statement
    touched, in that statement's transaction): its holdings summary is to be worked out
    again. An append-only log: writing it takes no lock another writer waits on."""

    __tablename__ = "holdings_change"
    __table_args__ = {"schema": SCHEMA}

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True,
                                                          autoincrement=True))
    bib_id: str


class Item(Row, table=True):
    """One copy on a shelf somewhere: its barcode, call number and owning branch.

    `status` and `site` are circulation's (kept from `circulation.item_status_changed` for
    availability in search); cataloging only sets them when the copy is catalogued.
    """

    __table_args__ = (
        Index("item_queue", "created_at",
              postgresql_where=text("cataloged_at IS NULL AND withdrawn_at IS NULL")),
        {"schema": SCHEMA},
    )

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
    #: When the item left the cataloging queue (`cataloging.item_cataloged` went out);
    #: NULL while it is being processed.
    cataloged_at: datetime | None = Field(default=None, sa_column=_ts())
    label_printed_at: datetime | None = Field(default=None, sa_column=_ts())
    withdrawn_at: datetime | None = Field(default=None, sa_column=_ts())
    withdrawn_reason: str | None = None


class ClassSerial(Row, table=True):
    """The last 种次号 given in one class number: titles in a class are numbered in the
    order the network first shelves them (I247.5/1, I247.5/2, ...)."""

    __table_args__ = {"schema": SCHEMA}

    class_number: str = Field(primary_key=True)
    last: int = 0


class ImportJob(Row, table=True):
    """One uploaded MARC file being read into bibs, batch by batch.

    Each batch commits its bibs, its report lines and the job's counters in one
    transaction, so a job picked up again after a crash goes on from `records_done`
    without doubling anything. `heartbeat_at` says the process running it is alive.
    """

    __table_args__ = {"schema": SCHEMA}

    job_id: str = Field(primary_key=True)
    filename: str
    marc_format: str | None = None
    on_match: str = "overlay"
    status: str = "queued"  # queued | running | done | failed
    spool_path: str
    bytes_total: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    bytes_done: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    records_done: int = 0
    created: int = 0
    overlaid: int = 0
    merged: int = 0
    kept: int = 0
    rejected: int = 0
    items_created: int = 0
    error: str | None = None
    created_at: datetime = Field(sa_column=_ts(False))
    started_at: datetime | None = Field(default=None, sa_column=_ts())
    finished_at: datetime | None = Field(default=None, sa_column=_ts())
    heartbeat_at: datetime | None = Field(default=None, sa_column=_ts())


class ImportLine(Row, table=True):
    """What became of one record of an import: created, overlaid, merged, kept or
    rejected, with the bib, the match point and (for a rejection) the reason."""

    __table_args__ = {"schema": SCHEMA}

    job_id: str = Field(primary_key=True)
    position: int = Field(primary_key=True)
    outcome: str
    bib_id: str | None = None
    matched_by: str | None = None  # isbn | title
    reason: str | None = None


class Site(Row, table=True):
    """What cataloging keeps of the network: names for holdings displays."""

    __table_args__ = {"schema": SCHEMA}

    code: str = Field(primary_key=True)
    name: str
    kind: str
    active: bool = True
