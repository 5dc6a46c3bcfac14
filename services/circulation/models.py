"""Circulation's tables (schema `circulation`): items' whereabouts, loans, transfers, sites."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Column, DateTime, Index, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field

from shared.service.rows import Row

SCHEMA = "circulation"


def _ts(nullable: bool = True) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable)


class Item(Row, table=True):
    """Where a copy is, where it belongs, and what it is doing now."""

    __table_args__ = {"schema": SCHEMA}

    barcode: str = Field(primary_key=True)
    bib_id: str | None = None
    isbn: str | None = None
    title: str | None = None
    owning_branch: str | None = Field(default=None, index=True)
    site: str | None = None
    status: str = "in_processing"
    open_transfer_id: str | None = None
    loan_id: str | None = None
    #: The hold this copy serves (on its way to, or on the shelf at, the pickup branch).
    hold_id: str | None = None
    item_type: str | None = None
    last_event_at: datetime | None = Field(default=None, sa_column=_ts())


class Transfer(Row, table=True):
    """A request to move one item between sites; at most one open per item."""

    inserted_in_bulk = True

    __table_args__ = (
        Index("one_open_transfer_per_item", "barcode", unique=True,
              postgresql_where=text("status = 'open'")),
        {"schema": SCHEMA},
    )

    transfer_id: str = Field(primary_key=True)
    barcode: str = Field(index=True)
    from_site: str
    to_site: str
    reason: str
    hold_id: str | None = None
    status: str = "open"  # open | completed | cancelled
    requested_at: datetime = Field(sa_column=_ts(False))
    closed_at: datetime | None = Field(default=None, sa_column=_ts())
    #: When `circulation.transfer_late` was sent for it (once).
    late_at: datetime | None = Field(default=None, sa_column=_ts())


class Loan(Row, table=True):
    inserted_in_bulk = True

    __table_args__ = {"schema": SCHEMA}

    loan_id: str = Field(primary_key=True)
    barcode: str = Field(index=True)
    patron: str
    branch: str
    checked_out_at: datetime = Field(sa_column=_ts(False))
    due: date
    returned_at: datetime | None = Field(default=None, sa_column=_ts())
    returned_branch: str | None = None
    renewals: int = 0


class Site(Row, table=True):
    """What circulation keeps of the network: codes, floating groups, whether open."""

    __table_args__ = {"schema": SCHEMA}

    code: str = Field(primary_key=True)
    name: str
    kind: str
    floating_group: str | None = None
    active: bool = True
    hub: str | None = None
    lat: float | None = None
    lon: float | None = None


class Hold(Row, table=True):
    """A reader's request for a title, collected at a pickup branch; first come, first
    served per title. waiting → in_transit (a copy assigned and moving) → ready (on the
    hold shelf until `expires_on`) → fulfilled | cancelled | expired."""

    __table_args__ = (
        Index("ix_circulation_hold_title_waiting", "title_key", "placed_at",
              postgresql_where=text("status = 'waiting'")),
        Index("ix_circulation_hold_patron", "patron"),
        {"schema": SCHEMA},
    )

    hold_id: str = Field(primary_key=True)
    patron: str
    #: `bib:<bib id>` or `isbn:<ISBN-13>`: what copies can fill it.
    title_key: str
    bib_id: str | None = None
    isbn: str | None = None
    pickup_branch: str
    status: str = "waiting"
    barcode: str | None = None
    placed_at: datetime = Field(sa_column=_ts(False))
    ready_at: datetime | None = Field(default=None, sa_column=_ts())
    expires_on: date | None = None
    closed_at: datetime | None = Field(default=None, sa_column=_ts())
    outcome: str | None = None


class Title(Row, table=True):
    """A title circulation knows: its bib and ISBN, and copies on order for it (so a hold
    can be placed before the first copy is catalogued)."""

    __table_args__ = {"schema": SCHEMA}

    isbn: str = Field(primary_key=True)
    bib_id: str | None = None
    on_order: int = 0


class OrderedLine(Row, table=True):
    """An order line announced by acquisition: its ISBN and copies still to come, so a
    cancellation takes them off the title's count."""

    __tablename__ = "ordered_line"
    __table_args__ = {"schema": SCHEMA}

    line_id: str = Field(primary_key=True)
    isbn: str
    outstanding: int


class RouteVisit(Row, table=True):
    """A planned route's stops (from `logistics.route_planned`): where a copy can ride
    straight to a pickup branch."""

    __tablename__ = "route_visit"
    __table_args__ = {"schema": SCHEMA}

    route_id: str = Field(primary_key=True)
    date: date
    sites: list[str] = Field(sa_column=Column(JSONB, nullable=False))


class LoanPolicyRow(Row, table=True):
    """A loan policy (domain.LoanPolicy) as staff set it."""

    __tablename__ = "loan_policy"
    __table_args__ = {"schema": SCHEMA}

    policy_id: str = Field(primary_key=True)
    scope: str = "*"
    item_type: str = "*"
    loan_days: int
    renewals: int
    max_items: int
    updated_at: datetime = Field(sa_column=_ts(False))


class Anomaly(Row, table=True):
    """A fact that contradicted what circulation believed, kept for staff to review."""

    inserted_in_bulk = True

    __table_args__ = {"schema": SCHEMA}

    id: int | None = Field(default=None, primary_key=True)
    barcode: str = Field(index=True)
    kind: str
    detail: str
    event_id: str
    at: datetime = Field(sa_column=_ts(False))
    #: The branch whose fact it was (None for facts from the services).
    site: str | None = Field(default=None, index=True)
    resolved_at: datetime | None = Field(default=None, sa_column=_ts())
    resolved_by: str | None = None
    resolution: str | None = None
