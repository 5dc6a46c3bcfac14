"""Acquisition's HTTP surface for acquisition staff (catalogers may read orders and funds)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, status
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy.exc import IntegrityError

from services.acquisition import domain, handlers
from services.acquisition.handlers import OrderDetail
from services.acquisition.models import Fund
from shared.errors import Conflict, NotFound
from shared.service.app import ServiceDep, SessionDep
from shared.service.auth import Principal, require

router = APIRouter()

Staff = Annotated[Principal, require("acquisitions")]
Reader = Annotated[Principal, require("acquisitions", "cataloger")]

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2)]


# --- vendors and funds ----------------------------------------------------------------------


class VendorIn(BaseModel):
    vendor_id: Text
    name: Text


class VendorView(BaseModel):
    vendor_id: str
    name: str


@router.post("/vendors", status_code=status.HTTP_201_CREATED, response_model=VendorView,
             tags=["vendors"])
async def post_vendor(body: VendorIn, service: ServiceDep, _: Staff) -> VendorView:
    try:
        async with service.uow() as uow:
            await handlers.add_vendor(uow, body.vendor_id, body.name)
    except IntegrityError as exc:  # created by a concurrent request
        raise Conflict(f"vendor {body.vendor_id!r} already exists") from exc
    return VendorView(vendor_id=body.vendor_id, name=body.name)


class FundIn(BaseModel):
    fund_code: Text
    name: Text
    budget: Money
    currency: Currency


class FundView(BaseModel):
    fund_code: str
    name: str
    currency: str
    budget: Decimal
    encumbered: Decimal
    spent: Decimal
    available: Decimal

    @classmethod
    def of(cls, fund: Fund) -> FundView:
        balance = handlers.balance_of(fund)
        return cls(fund_code=fund.fund_code, name=fund.name, currency=fund.currency,
                   budget=fund.budget, encumbered=fund.encumbered, spent=fund.spent,
                   available=balance.available)


@router.post("/funds", status_code=status.HTTP_201_CREATED, response_model=FundView,
             tags=["funds"])
async def post_fund(body: FundIn, service: ServiceDep, _: Staff) -> FundView:
    try:
        async with service.uow() as uow:
            fund = await handlers.add_fund(uow, body.fund_code, body.name, body.budget,
                                           body.currency)
    except IntegrityError as exc:  # created by a concurrent request
        raise Conflict(f"fund {body.fund_code!r} already exists") from exc
    return FundView.of(fund)


@router.get("/funds/{fund_code}", response_model=FundView, tags=["funds"])
async def get_fund(fund_code: str, session: SessionDep, _: Reader) -> FundView:
    fund = await session.get(Fund, fund_code)
    if fund is None:
        raise NotFound(f"no fund with code {fund_code!r}")
    return FundView.of(fund)


# --- orders ---------------------------------------------------------------------------------


#: Caps on an order (each a 422 naming the limit): lines per order, distribution entries
#: per line, and any quantity or number of copies.
MAX_ORDER_LINES = 1_000
MAX_DISTRIBUTION = 300
MAX_QUANTITY = 100_000


class DistributionIn(BaseModel):
    branch: Text
    copies: int = Field(ge=1, le=MAX_QUANTITY)


class LineIn(BaseModel):
    isbn: Text
    title: Text
    author: str | None = None
    publisher: str | None = None
    year: int | None = Field(default=None, ge=1, le=9999)
    unit_price: Money
    quantity: int = Field(ge=1, le=MAX_QUANTITY)
    distribution: list[DistributionIn] = Field(
        min_length=1, max_length=MAX_DISTRIBUTION,
        description="Owning branches and their copies, in the order they are filled when "
        f"copies arrive; the copies must add up to `quantity`. At most {MAX_DISTRIBUTION}.")


class OrderIn(BaseModel):
    vendor_id: Text
    fund_code: Text
    currency: Currency
    lines: list[LineIn] = Field(min_length=1, max_length=MAX_ORDER_LINES,
                                description=f"At most {MAX_ORDER_LINES}")


class OrderCreated(BaseModel):
    order_id: str
    status: str


class ShareView(BaseModel):
    branch: str
    copies: int
    received: int


class LineView(BaseModel):
    line_id: str
    isbn: str
    title: str
    author: str | None
    publisher: str | None
    year: int | None
    unit_price: Decimal
    quantity: int
    received: int
    distribution: list[ShareView]


class OrderView(BaseModel):
    order_id: str
    status: str
    vendor_id: str
    fund_code: str
    currency: str
    total: Decimal
    created_at: datetime
    opened_at: datetime | None
    closed_at: datetime | None
    lines: list[LineView]

    @classmethod
    def of(cls, detail: OrderDetail) -> OrderView:
        o = detail.order
        return cls(
            order_id=o.order_id, status=o.status, vendor_id=o.vendor_id,
            fund_code=o.fund_code, currency=o.currency, total=detail.total,
            created_at=o.created_at, opened_at=o.opened_at, closed_at=o.closed_at,
            lines=[
                LineView(line_id=ln.line_id, isbn=ln.isbn, title=ln.title, author=ln.author,
                         publisher=ln.publisher, year=ln.year, unit_price=ln.unit_price,
                         quantity=ln.quantity, received=ln.received,
                         distribution=[ShareView(branch=d.branch, copies=d.copies,
                                                 received=d.received)
                                       for d in detail.distribution[ln.line_id]])
                for ln in detail.lines
            ],
        )


@router.post("/orders", status_code=status.HTTP_201_CREATED, response_model=OrderCreated,
             tags=["orders"])
async def post_order(body: OrderIn, service: ServiceDep, _: Staff) -> OrderCreated:
    """Record a pending order; it promises nothing from the fund until it is opened."""
    command = handlers.NewOrder(
        vendor_id=body.vendor_id, fund_code=body.fund_code, currency=body.currency,
        lines=[
            handlers.NewLine(
                isbn=ln.isbn, title=ln.title, author=ln.author, publisher=ln.publisher,
                year=ln.year, unit_price=ln.unit_price, quantity=ln.quantity,
                distribution=[domain.Share(d.branch, d.copies) for d in ln.distribution],
            )
            for ln in body.lines
        ],
    )
    async with service.uow() as uow:
        order = await handlers.create_order(uow, command)
    return OrderCreated(order_id=order.order_id, status=order.status)


@router.get("/orders/{order_id}", response_model=OrderView, tags=["orders"])
async def get_order(order_id: str, session: SessionDep, _: Reader) -> OrderView:
    detail = await handlers.load_order(session, order_id)
    return OrderView.of(detail)


@router.post("/orders/{order_id}/open", response_model=OrderView, tags=["orders"])
async def post_open(order_id: str, service: ServiceDep, _: Staff) -> OrderView:
    """Encumber the fund with the order's total (409 past the budget) and announce it."""
    async with service.uow() as uow:
        detail = await handlers.open_order(uow, order_id)
    return OrderView.of(detail)


class ReceiptIn(BaseModel):
    line_id: Text
    quantity: int = Field(ge=1, le=MAX_QUANTITY)


class CopyView(BaseModel):
    copy_id: str
    owning_branch: str


class ReceiptView(BaseModel):
    copies: list[CopyView]


@router.post("/orders/{order_id}/receipts", status_code=status.HTTP_201_CREATED,
             response_model=ReceiptView, tags=["orders"])
async def post_receipt(order_id: str, body: ReceiptIn, service: ServiceDep,
                       _: Staff) -> ReceiptView:
    """Copies that arrived go to branches in distribution order, each share filled first."""
    async with service.uow() as uow:
        copies = await handlers.receive_copies(uow, order_id, body.line_id, body.quantity)
    return ReceiptView(copies=[CopyView(copy_id=c.copy_id, owning_branch=c.owning_branch)
                               for c in copies])


class CancelIn(BaseModel):
    reason: Text


@router.post("/orders/{order_id}/cancel", response_model=OrderView, tags=["orders"])
async def post_cancel(order_id: str, body: CancelIn, service: ServiceDep,
                      _: Staff) -> OrderView:
    """Stop a pending or open order; what was not received gives its encumbrance back."""
    async with service.uow() as uow:
        detail = await handlers.cancel_order(uow, order_id, body.reason)
    return OrderView.of(detail)
