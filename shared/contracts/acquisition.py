"""Events the acquisition center publishes on acquisition.orders."""

from __future__ import annotations

from decimal import Decimal

from pydantic import AwareDatetime, Field

from shared.contracts.registry import ACQUISITION_ORDERS, Event, Part, event

Code = str


class Distribution(Part):
    branch: Code
    copies: int = Field(ge=1)


class OrderLineData(Part):
    line_id: str
    isbn: str
    title: str
    author: str | None = None
    publisher: str | None = None
    year: int | None = None
    unit_price: Decimal
    quantity: int = Field(ge=1)
    distribution: list[Distribution]


class ReceivedCopy(Part):
    copy_id: str
    owning_branch: Code


@event("acquisition.order_opened", topic=ACQUISITION_ORDERS)
class OrderOpened(Event):
    order_id: str
    vendor_id: str
    fund_code: str
    currency: str
    lines: list[OrderLineData]


@event("acquisition.copies_received", topic=ACQUISITION_ORDERS)
class CopiesReceived(Event):
    order_id: str
    line_id: str
    isbn: str
    title: str
    author: str | None = None
    publisher: str | None = None
    year: int | None = None
    copies: list[ReceivedCopy]
    received_at: AwareDatetime


@event("acquisition.order_cancelled", topic=ACQUISITION_ORDERS)
class OrderCancelled(Event):
    order_id: str
    line_ids: list[str]
    reason: str


@event("acquisition.order_closed", topic=ACQUISITION_ORDERS)
class OrderClosed(Event):
    order_id: str
