"""Circulation's tables (schema `circulation`): items' whereabouts, loans, transfers, sites."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Column, DateTime, Index, text
from sqlmodel import Field, SQLModel

SCHEMA = "circulation"


def _ts(nullable: bool = True) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable)


class Item(SQLModel, table=True):
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
    last_event_at: datetime | None = Field(default=None, sa_column=_ts())


class Transfer(SQLModel, table=True):
    """A request to move one item between sites; at most one open per item."""

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


class Loan(SQLModel, table=True):
    __table_args__ = {"schema": SCHEMA}

    loan_id: str = Field(primary_key=True)
    barcode: str = Field(index=True)
    patron: str
    branch: str
    checked_out_at: datetime = Field(sa_column=_ts(False))
    due: date
    returned_at: datetime | None = Field(default=None, sa_column=_ts())
    returned_branch: str | None = None


class Site(SQLModel, table=True):
    """What circulation keeps of the network: codes, floating groups, whether open."""

    __table_args__ = {"schema": SCHEMA}

    code: str = Field(primary_key=True)
    name: str
    kind: str
    floating_group: str | None = None
    active: bool = True


class Anomaly(SQLModel, table=True):
    """A fact that contradicted what circulation believed, kept for staff to review."""

    __table_args__ = {"schema": SCHEMA}

    id: int | None = Field(default=None, primary_key=True)
    barcode: str = Field(index=True)
    kind: str
    detail: str
    event_id: str
    at: datetime = Field(sa_column=_ts(False))
