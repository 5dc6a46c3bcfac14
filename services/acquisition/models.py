"""Acquisition's tables (schema `acquisition`): vendors, funds, orders and what arrived."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Column, DateTime, Numeric, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field

from shared.service.rows import Row

SCHEMA = "acquisition"

MONEY = Numeric(14, 2)


def _ts(nullable: bool = True) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable)


def _money(default: str | None = None) -> Column[Decimal]:
    return Column(MONEY, nullable=False, server_default=default)


def _percent(default: str) -> Column[Decimal]:
    return Column(Numeric(5, 2), nullable=False, server_default=default)


class Vendor(Row, table=True):
    """A supplier: who to talk to, in which currency, how to reach it by EDI, its discount."""

    __table_args__ = {"schema": SCHEMA}

    vendor_id: str = Field(primary_key=True)
    name: str
    contact_name: str | None = None
    email: str | None = None
    phone: str | None = None
    address: str | None = None
    currency: str = Field(default="CNY", sa_column_kwargs={"server_default": "CNY"})
    #: EDI identifiers: SAN (31B) and GLN/EAN (14), as EDItEUR messages name parties.
    san: str | None = None
    gln: str | None = None
    #: Percent off list price; an order line's estimated price (what it encumbers) is net of it.
    discount_percent: Decimal = Field(default=Decimal("0"), sa_column=_percent("0"))
    active: bool = Field(default=True, sa_column_kwargs={"server_default": "true"})


class Fund(Row, table=True):
    """Money set aside for buying: open orders encumber it, received copies spend it."""

    __table_args__ = {"schema": SCHEMA}

    fund_code: str = Field(primary_key=True)
    name: str
    currency: str
    budget: Decimal = Field(sa_column=_money())
    encumbered: Decimal = Field(default=Decimal("0.00"), sa_column=_money("0"))
    spent: Decimal = Field(default=Decimal("0.00"), sa_column=_money("0"))
    fiscal_year: int = Field(default=2026, sa_column_kwargs={"server_default": "2026"})
    #: The site whose money it is (a county library's own budget); None: the center's.
    site: str | None = None
    #: Opening warns past warn_percent of the budget committed, refuses past stop_percent.
    warn_percent: Decimal = Field(default=Decimal("90"), sa_column=_percent("90"))
    stop_percent: Decimal = Field(default=Decimal("100"), sa_column=_percent("100"))
    #: Closed by a rollover: its open encumbrances moved to this fund.
    rolled_over_to: str | None = None


class PurchaseOrder(Row, table=True):
    """draft → open → partially_received → received → closed, or cancelled (domain.py)."""

    __tablename__ = "purchase_order"
    __table_args__ = {"schema": SCHEMA}

    order_id: str = Field(primary_key=True)
    vendor_id: str = Field(foreign_key=f"{SCHEMA}.vendor.vendor_id", index=True)
    fund_code: str = Field(foreign_key=f"{SCHEMA}.fund.fund_code", index=True)
    currency: str
    status: str = "draft"
    created_at: datetime = Field(sa_column=_ts(False))
    #: When every copy was received or cancelled (`acquisition.order_closed` went out).
    settled_at: datetime | None = Field(default=None, sa_column=_ts())
    opened_at: datetime | None = Field(default=None, sa_column=_ts())
    closed_at: datetime | None = Field(default=None, sa_column=_ts())
    cancel_reason: str | None = None


class OrderLine(Row, table=True):
    """One title on an order: its bibliographic data, price and how many copies."""

    __tablename__ = "order_line"
    __table_args__ = {"schema": SCHEMA}

    line_id: str = Field(primary_key=True)
    order_id: str = Field(foreign_key=f"{SCHEMA}.purchase_order.order_id", index=True)
    position: int
    isbn: str = Field(index=True)
    title: str
    author: str | None = None
    publisher: str | None = None
    year: int | None = None
    unit_price: Decimal = Field(sa_column=_money())
    quantity: int
    received: int = 0
    #: False when the ISBN does not check out (kept as given, flagged for staff).
    isbn_valid: bool = Field(default=True, sa_column_kwargs={"server_default": "true"})
    #: The line's own fund; None: the order's.
    fund_code: str | None = Field(default=None, foreign_key=f"{SCHEMA}.fund.fund_code")
    #: Unit price net of the vendor's discount: what one copy encumbers.
    estimated_price: Decimal = Field(sa_column=_money("0"))
    cancelled: int = 0
    invoiced: int = 0
    #: What this line holds encumbered on its fund now.
    encumbered: Decimal = Field(default=Decimal("0"), sa_column=_money("0"))
    spent: Decimal = Field(default=Decimal("0"), sa_column=_money("0"))


class LineDistribution(Row, table=True):
    """One branch's share of a line's copies; `position` is the order shares are filled in."""

    __tablename__ = "distribution"
    __table_args__ = {"schema": SCHEMA}

    line_id: str = Field(foreign_key=f"{SCHEMA}.order_line.line_id", primary_key=True)
    branch: str = Field(primary_key=True)
    position: int
    copies: int
    received: int = 0
    cancelled: int = 0


class ReceivedCopy(Row, table=True):
    """A physical copy that arrived from the vendor and the branch that will own it."""

    __tablename__ = "received_copy"
    __table_args__ = {"schema": SCHEMA}

    copy_id: str = Field(primary_key=True)
    line_id: str = Field(foreign_key=f"{SCHEMA}.order_line.line_id", index=True)
    owning_branch: str
    received_at: datetime = Field(sa_column=_ts(False))


class Site(Row, table=True):
    """What acquisition keeps of the network (from `network.site_upserted`)."""

    __table_args__ = {"schema": SCHEMA}

    code: str = Field(primary_key=True)
    name: str
    kind: str
    active: bool = True


class DistributionFormula(Row, table=True):
    """A named, reusable split of copies over branches (Evergreen's distribution formula)."""

    __tablename__ = "distribution_formula"
    __table_args__ = {"schema": SCHEMA}

    name: str = Field(primary_key=True)
    #: [[branch, copies], ...] in the order they are applied.
    entries: list[list[str | int]] = Field(sa_column=Column(JSONB, nullable=False))
    updated_at: datetime = Field(sa_column=_ts(False))


class Invoice(Row, table=True):
    """A vendor's bill: lines against order lines; paying moves encumbered money to spent."""

    __table_args__ = (UniqueConstraint("vendor_id", "invoice_number"), {"schema": SCHEMA})

    invoice_id: str = Field(primary_key=True)
    vendor_id: str = Field(foreign_key=f"{SCHEMA}.vendor.vendor_id", index=True)
    invoice_number: str
    currency: str
    status: str = "draft"  # draft | paid
    source: str = "http"  # http | edifact
    created_at: datetime = Field(sa_column=_ts(False))
    paid_at: datetime | None = Field(default=None, sa_column=_ts())


class InvoiceLine(Row, table=True):
    __tablename__ = "invoice_line"
    __table_args__ = {"schema": SCHEMA}

    invoice_id: str = Field(foreign_key=f"{SCHEMA}.invoice.invoice_id", primary_key=True)
    position: int = Field(primary_key=True)
    order_id: str
    line_id: str = Field(foreign_key=f"{SCHEMA}.order_line.line_id", index=True)
    quantity: int
    amount: Decimal = Field(sa_column=_money())
    #: Set when paid: the encumbrance it relieved, and amount - relieved.
    relieved: Decimal | None = Field(default=None, sa_column=Column(MONEY, nullable=True))
    variance: Decimal | None = Field(default=None, sa_column=Column(MONEY, nullable=True))


class HeldCopy(Row, table=True):
    """A catalogued copy in the network (from `cataloging.item_cataloged`): what the
    duplicate warning counts."""

    __tablename__ = "held_copy"
    __table_args__ = {"schema": SCHEMA}

    barcode: str = Field(primary_key=True)
    isbn: str = Field(index=True)
    owning_branch: str
