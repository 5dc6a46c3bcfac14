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
    #: The line's own fund, when it is not the order's.
    fund_code: str | None = None


class ReceivedCopy(Part):
    copy_id: str
    owning_branch: Code


@event("acquisition.order_opened", topic=ACQUISITION_ORDERS)
class OrderOpened(Event):
    """An order's lines, split over `parts` events when one would pass the record size."""

    order_id: str
    vendor_id: str
    fund_code: str
    currency: str
    lines: list[OrderLineData]
    part: int = Field(default=1, ge=1)
    parts: int = Field(default=1, ge=1)


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
    part: int = Field(default=1, ge=1)
    parts: int = Field(default=1, ge=1)


class CancelledLine(Part):
    line_id: str
    copies: int = Field(ge=1)


@event("acquisition.order_cancelled", topic=ACQUISITION_ORDERS)
class OrderCancelled(Event):
    order_id: str
    line_ids: list[str]
    reason: str
    #: How many copies of each line will not come (all that were outstanding, or fewer).
    lines: list[CancelledLine] = []


@event("acquisition.order_closed", topic=ACQUISITION_ORDERS)
class OrderClosed(Event):
    """Every copy of the order was received or cancelled: nothing more will arrive."""

    order_id: str
    received: int = 0
    cancelled: int = 0
