"""Acquisition's tables (schema `acquisition`): vendors, funds, orders and what arrived."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Column, DateTime, Numeric
from sqlmodel import Field, SQLModel

SCHEMA = "acquisition"

MONEY = Numeric(14, 2)


def _ts(nullable: bool = True) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable)


def _money(default: str | None = None) -> Column[Decimal]:
    return Column(MONEY, nullable=False, server_default=default)


class Vendor(SQLModel, table=True):
    __table_args__ = {"schema": SCHEMA}

    vendor_id: str = Field(primary_key=True)
    name: str


class Fund(SQLModel, table=True):
    """Money set aside for buying: open orders encumber it, received copies spend it."""

    __table_args__ = {"schema": SCHEMA}

    fund_code: str = Field(primary_key=True)
    name: str
    currency: str
    budget: Decimal = Field(sa_column=_money())
    encumbered: Decimal = Field(default=Decimal("0.00"), sa_column=_money("0"))
    spent: Decimal = Field(default=Decimal("0.00"), sa_column=_money("0"))


class PurchaseOrder(SQLModel, table=True):
    """pending → open → closed (everything received) or cancelled."""

    __tablename__ = "purchase_order"
    __table_args__ = {"schema": SCHEMA}

    order_id: str = Field(primary_key=True)
    vendor_id: str = Field(foreign_key=f"{SCHEMA}.vendor.vendor_id", index=True)
    fund_code: str = Field(foreign_key=f"{SCHEMA}.fund.fund_code", index=True)
    currency: str
    status: str = "pending"
    created_at: datetime = Field(sa_column=_ts(False))
    opened_at: datetime | None = Field(default=None, sa_column=_ts())
    closed_at: datetime | None = Field(default=None, sa_column=_ts())
    cancel_reason: str | None = None


class OrderLine(SQLModel, table=True):
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


class LineDistribution(SQLModel, table=True):
    """One branch's share of a line's copies; `position` is the order shares are filled in."""

    __tablename__ = "distribution"
    __table_args__ = {"schema": SCHEMA}

    line_id: str = Field(foreign_key=f"{SCHEMA}.order_line.line_id", primary_key=True)
    branch: str = Field(primary_key=True)
    position: int
    copies: int
    received: int = 0


class ReceivedCopy(SQLModel, table=True):
    """A physical copy that arrived from the vendor and the branch that will own it."""

    __tablename__ = "received_copy"
    __table_args__ = {"schema": SCHEMA}

    copy_id: str = Field(primary_key=True)
    line_id: str = Field(foreign_key=f"{SCHEMA}.order_line.line_id", index=True)
    owning_branch: str
    received_at: datetime = Field(sa_column=_ts(False))


class Site(SQLModel, table=True):
    """What acquisition keeps of the network (from `network.site_upserted`)."""

    __table_args__ = {"schema": SCHEMA}

    code: str = Field(primary_key=True)
    name: str
    kind: str
    active: bool = True
