"""Acquisition's HTTP surface for acquisition staff (catalogers may read orders and funds)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Path, Query, UploadFile, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from services.acquisition import domain, edifact, handlers, quotes
from services.acquisition.handlers import OrderDetail, OrderWarning
from services.acquisition.models import (
    DistributionFormula,
    Fund,
    Invoice,
    LineDistribution,
    OrderLine,
    PurchaseOrder,
    ReceivedCopy,
    Vendor,
)
from shared.errors import Conflict, Invalid, NotFound
from shared.service.app import BODY_LIMIT_KEY, ServiceDep, SessionDep
from shared.service.auth import Principal, require
from shared.service.period import PeriodDep

router = APIRouter()

Staff = Annotated[Principal, require("acquisitions")]
Reader = Annotated[Principal, require("acquisitions", "cataloger")]

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2)]
Percent = Annotated[Decimal, Field(ge=0, le=100, max_digits=5, decimal_places=2)]
Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64,
                                        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
PathCode = Annotated[str, Path(min_length=1, max_length=64)]


# --- vendors and funds ----------------------------------------------------------------------


class VendorIn(BaseModel):
    vendor_id: Code
    name: Text
    contact_name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=200,
                              pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    phone: str | None = Field(default=None, max_length=50)
    address: str | None = Field(default=None, max_length=500)
    currency: Currency = "CNY"
    san: str | None = Field(default=None, pattern=r"^[0-9]{6}[0-9X]$",
                            description="Standard Address Number (EDI qualifier 31B)")
    gln: str | None = Field(default=None, pattern=r"^[0-9]{13}$",
                            description="Global Location Number / EAN (EDI qualifier 14)")
    discount_percent: Percent = Decimal("0")
    active: bool = True


class VendorView(VendorIn):
    vendor_id: str

    @classmethod
    def of(cls, vendor: Vendor) -> VendorView:
        return cls.model_validate(vendor, from_attributes=True)


@router.post("/vendors", status_code=status.HTTP_201_CREATED, response_model=VendorView,
             tags=["vendors"])
async def post_vendor(body: VendorIn, service: ServiceDep, _: Staff) -> VendorView:
    try:
        async with service.uow() as uow:
            vendor = await handlers.add_vendor(uow, **body.model_dump())
    except IntegrityError as exc:  # created by a concurrent request
        raise Conflict(f"vendor {body.vendor_id!r} already exists") from exc
    return VendorView.of(vendor)


@router.put("/vendors/{vendor_id}", response_model=VendorView, tags=["vendors"])
async def put_vendor(vendor_id: PathCode, body: VendorIn, service: ServiceDep,
                     _: Staff) -> VendorView:
    """Create or update a vendor (the body's vendor_id must be the path's)."""
    if body.vendor_id != vendor_id:
        raise Invalid(f"vendor_id {body.vendor_id!r} is not the path's {vendor_id!r}",
                      field="vendor_id")
    async with service.uow() as uow:
        vendor = await handlers.put_vendor(uow, handlers.VendorData(**body.model_dump()))
    return VendorView.of(vendor)


@router.get("/vendors", response_model=list[VendorView], tags=["vendors"])
async def list_vendors(session: SessionDep, _: Reader) -> list[VendorView]:
    rows = (await session.exec(select(Vendor).order_by(col(Vendor.vendor_id)))).all()
    return [VendorView.of(v) for v in rows]


@router.get("/vendors/{vendor_id}", response_model=VendorView, tags=["vendors"])
async def get_vendor(vendor_id: PathCode, session: SessionDep, _: Reader) -> VendorView:
    vendor = await session.get(Vendor, vendor_id)
    if vendor is None:
        raise NotFound(f"no vendor {vendor_id!r}")
    return VendorView.of(vendor)


class FundIn(BaseModel):
    fund_code: Code
    name: Text
    budget: Money
    currency: Currency
    fiscal_year: int = Field(default=2026, ge=2000, le=2100)
    site: str | None = Field(default=None, min_length=1, max_length=64,
                             description="The site whose money it is; none: the center's")
    warn_percent: Percent = Decimal("90")
    stop_percent: Annotated[Decimal, Field(ge=0, le=200, max_digits=5, decimal_places=2)] = \
        Decimal("100")


class FundView(BaseModel):
    fund_code: str
    name: str
    currency: str
    fiscal_year: int
    site: str | None
    budget: Decimal
    encumbered: Decimal
    spent: Decimal
    available: Decimal
    warn_percent: Decimal
    stop_percent: Decimal
    #: Past the warn percentage of the budget committed.
    warning: bool
    rolled_over_to: str | None

    @classmethod
    def of(cls, fund: Fund) -> FundView:
        balance = handlers.balance_of(fund)
        return cls(fund_code=fund.fund_code, name=fund.name, currency=fund.currency,
                   fiscal_year=fund.fiscal_year, site=fund.site,
                   budget=fund.budget, encumbered=fund.encumbered, spent=fund.spent,
                   available=balance.available, warn_percent=fund.warn_percent,
                   stop_percent=fund.stop_percent, warning=balance.warns(),
                   rolled_over_to=fund.rolled_over_to)


@router.post("/funds", status_code=status.HTTP_201_CREATED, response_model=FundView,
             tags=["funds"])
async def post_fund(body: FundIn, service: ServiceDep, _: Staff) -> FundView:
    details = body.model_dump(exclude={"fund_code", "name", "budget", "currency"})
    try:
        async with service.uow() as uow:
            fund = await handlers.add_fund(uow, body.fund_code, body.name, body.budget,
                                           body.currency, **details)
    except IntegrityError as exc:  # created by a concurrent request
        raise Conflict(f"fund {body.fund_code!r} already exists") from exc
    return FundView.of(fund)


@router.get("/funds", response_model=list[FundView], tags=["funds"])
async def list_funds(session: SessionDep, _: Reader,
                     fiscal_year: Annotated[int | None, Query(ge=2000, le=2100)] = None,
                     ) -> list[FundView]:
    """Fund balances (budget = encumbered + spent + available), by year if asked."""
    query = select(Fund).order_by(col(Fund.fiscal_year), col(Fund.fund_code))
    if fiscal_year is not None:
        query = query.where(col(Fund.fiscal_year) == fiscal_year)
    return [FundView.of(f) for f in (await session.exec(query)).all()]


@router.get("/funds/{fund_code}", response_model=FundView, tags=["funds"])
async def get_fund(fund_code: PathCode, session: SessionDep, _: Reader) -> FundView:
    fund = await session.get(Fund, fund_code)
    if fund is None:
        raise NotFound(f"no fund with code {fund_code!r}")
    return FundView.of(fund)


class RolloverIn(BaseModel):
    to_fund_code: Code


class RolloverView(BaseModel):
    from_fund: str
    to_fund: str
    lines: int
    amount: Decimal


@router.post("/funds/{fund_code}/rollover", response_model=RolloverView, tags=["funds"])
async def post_rollover(fund_code: PathCode, body: RolloverIn, service: ServiceDep,
                        _: Staff) -> RolloverView:
    """Year end: open encumbrances move to next year's fund; this fund is closed."""
    async with service.uow() as uow:
        done = await handlers.rollover_fund(uow, fund_code, body.to_fund_code)
    return RolloverView(from_fund=done.from_fund, to_fund=done.to_fund, lines=done.lines,
                        amount=done.amount)


# --- distribution formulas ------------------------------------------------------------------


class FormulaEntry(BaseModel):
    branch: Code
    copies: int = Field(ge=1, le=10_000)


class FormulaIn(BaseModel):
    entries: list[FormulaEntry] = Field(min_length=1, max_length=1_000)


class FormulaView(BaseModel):
    name: str
    entries: list[FormulaEntry]
    copies: int
    updated_at: datetime

    @classmethod
    def of(cls, formula: DistributionFormula) -> FormulaView:
        entries = [FormulaEntry(branch=b, copies=n)
                   for b, n in handlers.formula_entries(formula)]
        return cls(name=formula.name, entries=entries, copies=sum(e.copies for e in entries),
                   updated_at=formula.updated_at)


@router.put("/distribution-formulas/{name}", response_model=FormulaView, tags=["formulas"])
async def put_formula(name: PathCode, body: FormulaIn, service: ServiceDep,
                      _: Staff) -> FormulaView:
    """A named split of copies over branches, applied to order lines in order."""
    async with service.uow() as uow:
        formula = await handlers.put_formula(uow, name,
                                             [(e.branch, e.copies) for e in body.entries])
    return FormulaView.of(formula)


@router.get("/distribution-formulas", response_model=list[FormulaView], tags=["formulas"])
async def list_formulas(session: SessionDep, _: Reader) -> list[FormulaView]:
    rows = (await session.exec(select(DistributionFormula)
                               .order_by(col(DistributionFormula.name)))).all()
    return [FormulaView.of(f) for f in rows]


# --- orders ---------------------------------------------------------------------------------


#: Caps on an order (each a 422 naming the limit): lines per order, distribution entries
#: per line, formulas per line, and any quantity or number of copies.
MAX_ORDER_LINES = 5_000
MAX_DISTRIBUTION = 300
#: A 5,000-line order with its distributions runs past the default 1 MiB body limit.
MAX_ORDER_BODY = 8 * 1024 * 1024
MAX_FORMULAS = 10
MAX_QUANTITY = 100_000


class DistributionIn(BaseModel):
    branch: Code
    copies: int = Field(ge=1, le=MAX_QUANTITY)


class LineIn(BaseModel):
    isbn: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                           max_length=32)]
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                            max_length=1000)]
    author: str | None = Field(default=None, max_length=500)
    publisher: str | None = Field(default=None, max_length=500)
    year: int | None = Field(default=None, ge=1, le=9999)
    unit_price: Money
    quantity: int = Field(ge=1, le=MAX_QUANTITY)
    fund_code: Code | None = Field(default=None, description="The line's own fund")
    distribution: list[DistributionIn] = Field(
        default=[], max_length=MAX_DISTRIBUTION,
        description="Owning branches and their copies, in the order they are filled when "
        f"copies arrive; at most `quantity` copies. At most {MAX_DISTRIBUTION}.")
    formulas: list[Code] = Field(
        default=[], max_length=MAX_FORMULAS,
        description="Distribution formulas applied after `distribution`, in order, until "
        "the line's copies are given out")


class OrderIn(BaseModel):
    vendor_id: Code
    fund_code: Code
    currency: Currency
    lines: list[LineIn] = Field(min_length=1, max_length=MAX_ORDER_LINES,
                                description=f"At most {MAX_ORDER_LINES}")


class WarningView(BaseModel):
    field: str
    kind: str
    message: str
    detail: dict[str, Any] = {}

    @classmethod
    def of(cls, w: OrderWarning) -> WarningView:
        return cls(field=w.field, kind=w.kind, message=w.message, detail=w.detail)


class OrderCreated(BaseModel):
    order_id: str
    status: str
    warnings: list[WarningView]


class ShareView(BaseModel):
    branch: str
    copies: int
    received: int
    cancelled: int


class LineView(BaseModel):
    line_id: str
    isbn: str
    isbn_valid: bool
    title: str
    author: str | None
    publisher: str | None
    year: int | None
    fund_code: str
    unit_price: Decimal
    estimated_price: Decimal
    quantity: int
    received: int
    cancelled: int
    invoiced: int
    unallocated: int
    encumbered: Decimal
    spent: Decimal
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
    cancel_reason: str | None
    lines: list[LineView]
    warnings: list[WarningView] = []

    @classmethod
    def of(cls, detail: OrderDetail, warnings: list[OrderWarning] | None = None) -> OrderView:
        o = detail.order
        return cls(
            order_id=o.order_id, status=o.status, vendor_id=o.vendor_id,
            fund_code=o.fund_code, currency=o.currency, total=detail.total,
            created_at=o.created_at, opened_at=o.opened_at, closed_at=o.closed_at,
            cancel_reason=o.cancel_reason,
            warnings=[WarningView.of(w) for w in warnings or []],
            lines=[
                LineView(line_id=ln.line_id, isbn=ln.isbn, isbn_valid=ln.isbn_valid,
                         title=ln.title, author=ln.author, publisher=ln.publisher,
                         year=ln.year, fund_code=ln.fund_code or o.fund_code,
                         unit_price=ln.unit_price, estimated_price=ln.estimated_price,
                         quantity=ln.quantity, received=ln.received, cancelled=ln.cancelled,
                         invoiced=ln.invoiced, encumbered=ln.encumbered, spent=ln.spent,
                         unallocated=ln.quantity - sum(
                             d.copies for d in detail.distribution[ln.line_id]),
                         distribution=[ShareView(branch=d.branch, copies=d.copies,
                                                 received=d.received, cancelled=d.cancelled)
                                       for d in detail.distribution[ln.line_id]])
                for ln in detail.lines
            ],
        )


def _command(body: OrderIn) -> handlers.NewOrder:
    return handlers.NewOrder(
        vendor_id=body.vendor_id, fund_code=body.fund_code, currency=body.currency,
        lines=[
            handlers.NewLine(
                isbn=ln.isbn, title=ln.title, author=ln.author, publisher=ln.publisher,
                year=ln.year, unit_price=ln.unit_price, quantity=ln.quantity,
                fund_code=ln.fund_code, formulas=ln.formulas,
                distribution=[domain.Share(d.branch, d.copies) for d in ln.distribution],
            )
            for ln in body.lines
        ],
    )


@router.post("/orders", status_code=status.HTTP_201_CREATED, response_model=OrderCreated,
             tags=["orders"], openapi_extra={BODY_LIMIT_KEY: MAX_ORDER_BODY})
async def post_order(body: OrderIn, service: ServiceDep, _: Staff) -> OrderCreated:
    """Record a draft order; it promises nothing from a fund until it is opened. Warnings:
    duplicates (held or on order elsewhere), invalid ISBNs, copies without a branch."""
    async with service.uow() as uow:
        created = await handlers.create_order(uow, _command(body))
    return OrderCreated(order_id=created.order.order_id, status=created.order.status,
                        warnings=[WarningView.of(w) for w in created.warnings])


class OrderSummary(BaseModel):
    order_id: str
    status: str
    vendor_id: str
    fund_code: str
    currency: str
    lines: int
    copies: int
    received: int
    cancelled: int
    created_at: datetime
    opened_at: datetime | None


OrderStatusName = Literal["draft", "open", "partially_received", "received", "closed",
                          "cancelled"]


@router.get("/orders", response_model=list[OrderSummary], tags=["orders"])
async def list_orders(
    session: SessionDep, _: Reader,
    status_: Annotated[OrderStatusName | None, Query(alias="status")] = None,
    vendor_id: Annotated[str | None, Query(max_length=64)] = None,
    fund_code: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[OrderSummary]:
    """Orders, newest first, filtered by status, vendor and fund."""
    query = (sa_select(PurchaseOrder, func.count(col(OrderLine.line_id)),
                    func.coalesce(func.sum(OrderLine.quantity), 0),
                    func.coalesce(func.sum(OrderLine.received), 0),
                    func.coalesce(func.sum(OrderLine.cancelled), 0))
             .join(OrderLine, col(OrderLine.order_id) == col(PurchaseOrder.order_id),
                   isouter=True)
             .group_by(col(PurchaseOrder.order_id))
             .order_by(col(PurchaseOrder.created_at).desc(), col(PurchaseOrder.order_id))
             .limit(limit).offset(offset))
    if status_:
        query = query.where(col(PurchaseOrder.status) == status_)
    if vendor_id:
        query = query.where(col(PurchaseOrder.vendor_id) == vendor_id)
    if fund_code:
        query = query.where(col(PurchaseOrder.fund_code) == fund_code)
    rows = (await session.execute(query)).tuples().all()
    return [OrderSummary(order_id=o.order_id, status=o.status, vendor_id=o.vendor_id,
                         fund_code=o.fund_code, currency=o.currency, lines=n,
                         copies=int(q), received=int(r), cancelled=int(c),
                         created_at=o.created_at, opened_at=o.opened_at)
            for o, n, q, r, c in rows]


@router.get("/orders/{order_id}", response_model=OrderView, tags=["orders"])
async def get_order(order_id: PathCode, session: SessionDep, _: Reader) -> OrderView:
    detail = await handlers.load_order(session, order_id)
    return OrderView.of(detail)


@router.post("/orders/{order_id}/open", response_model=OrderView, tags=["orders"])
async def post_open(order_id: PathCode, service: ServiceDep, _: Staff) -> OrderView:
    """Encumber each line on its fund (409 past a fund's stop percentage, naming the fund
    and the shortfall; a warning past its warn percentage) and announce the order."""
    async with service.uow() as uow:
        opened = await handlers.open_order(uow, order_id)
    return OrderView.of(opened.detail, opened.warnings)


class ReceiptLineIn(BaseModel):
    line_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    quantity: int = Field(ge=1, le=MAX_QUANTITY)


class ReceiptIn(BaseModel):
    """One line (`line_id`, `quantity`) or several (`lines`)."""

    line_id: str | None = Field(default=None, min_length=1, max_length=64)
    quantity: int | None = Field(default=None, ge=1, le=MAX_QUANTITY)
    lines: list[ReceiptLineIn] | None = Field(default=None, min_length=1,
                                              max_length=MAX_ORDER_LINES)

    @model_validator(mode="after")
    def _one_form(self) -> ReceiptIn:
        if self.lines is None and (self.line_id is None or self.quantity is None):
            raise ValueError("give line_id and quantity, or lines")
        if self.lines is not None and (self.line_id is not None or self.quantity is not None):
            raise ValueError("give line_id and quantity, or lines, not both")
        return self

    def wanted(self) -> list[handlers.ReceiptLine]:
        if self.lines is not None:
            return [handlers.ReceiptLine(ln.line_id, ln.quantity) for ln in self.lines]
        assert self.line_id is not None and self.quantity is not None
        return [handlers.ReceiptLine(self.line_id, self.quantity)]


class CopyView(BaseModel):
    copy_id: str
    owning_branch: str


class ReceiptView(BaseModel):
    copies: list[CopyView]


@router.post("/orders/{order_id}/receipts", status_code=status.HTTP_201_CREATED,
             response_model=ReceiptView, tags=["receiving"])
async def post_receipt(order_id: PathCode, body: ReceiptIn, service: ServiceDep,
                       _: Staff) -> ReceiptView:
    """Copies that arrived go to branches in distribution order, each share filled first;
    one copy id per physical copy. More than is still to come is refused (409)."""
    async with service.uow() as uow:
        copies = await handlers.receive_copies(uow, order_id, body.wanted())
    return ReceiptView(copies=[CopyView(copy_id=c.copy_id, owning_branch=c.owning_branch)
                               for c in copies])


class WorkItem(BaseModel):
    order_id: str
    vendor_id: str
    line_id: str
    isbn: str
    title: str
    expected: int
    opened_at: datetime | None


@router.get("/receiving", response_model=list[WorkItem], tags=["receiving"])
async def receiving_worklist(
    session: SessionDep, _: Reader,
    vendor_id: Annotated[str | None, Query(max_length=64)] = None,
    isbn: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[WorkItem]:
    """Lines still expecting copies, oldest order first: what the receiving desk checks a
    vendor's boxes against (by vendor, or by the ISBN scanned off a book)."""
    outstanding = col(OrderLine.quantity) - col(OrderLine.received) - col(OrderLine.cancelled)
    query = (select(OrderLine, PurchaseOrder)
             .join(PurchaseOrder, col(PurchaseOrder.order_id) == col(OrderLine.order_id))
             .where(col(PurchaseOrder.status).in_(domain.RECEIVING), outstanding > 0)
             .order_by(col(PurchaseOrder.opened_at), col(OrderLine.position)).limit(limit))
    if vendor_id:
        query = query.where(col(PurchaseOrder.vendor_id) == vendor_id)
    if isbn:
        query = query.where(col(OrderLine.isbn) == domain.normalise_isbn(isbn))
    rows = (await session.exec(query)).all()
    return [WorkItem(order_id=o.order_id, vendor_id=o.vendor_id, line_id=ln.line_id,
                     isbn=ln.isbn, title=ln.title,
                     expected=ln.quantity - ln.received - ln.cancelled, opened_at=o.opened_at)
            for ln, o in rows]


class BranchFigures(BaseModel):
    ordered: int = Field(description="Copies on orders opened in the period, less those "
                                     "cancelled")
    received: int = Field(description="Copies received in the period")


class BranchReportRow(BranchFigures):
    branch: str


class AcquisitionReport(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: date = Field(alias="from")
    to: date
    branches: list[BranchReportRow]
    network: BranchFigures


@router.get("/report", response_model=AcquisitionReport, tags=["receiving"])
async def acquisition_report(
    service: ServiceDep, session: SessionDep,
    _: Annotated[Principal, require("acquisitions", "dispatcher", "cataloger")],
    period: PeriodDep,
) -> AcquisitionReport:
    """Copies ordered and received per owning branch in a period, in two grouped queries:
    the network report's one call instead of one per order.

    The days are the library's (TIMEZONE, default Asia/Shanghai): `from` 00:00 local up to
    the midnight after `to`. `ordered` counts each branch's share (copies - cancelled) of
    orders whose `opened_at` falls in the period; `received` counts the copies whose
    `received_at` does, whatever order they came on. Branches with neither are left out.
    """
    start, end = period.bounds(service.settings.timezone)
    ordered_q = (
        sa_select(col(LineDistribution.branch),
                  func.sum(col(LineDistribution.copies) - col(LineDistribution.cancelled)))
        .join(OrderLine, col(OrderLine.line_id) == col(LineDistribution.line_id))
        .join(PurchaseOrder, col(PurchaseOrder.order_id) == col(OrderLine.order_id))
        .where(col(PurchaseOrder.opened_at) >= start, col(PurchaseOrder.opened_at) < end)
        .group_by(col(LineDistribution.branch)))
    received_q = (
        sa_select(col(ReceivedCopy.owning_branch), func.count())
        .where(col(ReceivedCopy.received_at) >= start, col(ReceivedCopy.received_at) < end)
        .group_by(col(ReceivedCopy.owning_branch)))
    ordered = {b: int(n) for b, n in (await session.execute(ordered_q)).all()}
    received = {b: int(n) for b, n in (await session.execute(received_q)).all()}
    rows = [BranchReportRow(branch=b, ordered=ordered.get(b, 0), received=received.get(b, 0))
            for b in sorted(ordered.keys() | received.keys())]
    rows = [r for r in rows if r.ordered or r.received]
    return AcquisitionReport(
        from_=period.start, to=period.end, branches=rows,
        network=BranchFigures(ordered=sum(r.ordered for r in rows),
                              received=sum(r.received for r in rows)))


class CancelIn(BaseModel):
    reason: Text


@router.post("/orders/{order_id}/cancel", response_model=OrderView, tags=["orders"])
async def post_cancel(order_id: PathCode, body: CancelIn, service: ServiceDep,
                      _: Staff) -> OrderView:
    """Stop an order: a draft is dropped; an opened order's copies still to come are
    cancelled and their encumbrance returns."""
    async with service.uow() as uow:
        detail = await handlers.cancel_order(uow, order_id, body.reason)
    return OrderView.of(detail)


class LineCancelIn(BaseModel):
    copies: int | None = Field(default=None, ge=1, le=MAX_QUANTITY,
                               description="How many; none: every copy still to come")
    reason: Text


@router.post("/orders/{order_id}/lines/{line_id}/cancel", response_model=OrderView,
             tags=["orders"])
async def post_cancel_line(order_id: PathCode, line_id: PathCode, body: LineCancelIn,
                           service: ServiceDep, _: Staff) -> OrderView:
    """Cancel copies of one line that will never come (from the last branch back)."""
    async with service.uow() as uow:
        detail = await handlers.cancel_lines(
            uow, order_id, [handlers.LineCancel(line_id, body.copies)], body.reason)
    return OrderView.of(detail)


# --- vendor exchange ------------------------------------------------------------------------


@router.get("/orders/{order_id}/edifact", response_class=Response, tags=["edi"],
            responses={200: {"content": {"application/edifact": {}}}})
async def get_order_edifact(order_id: PathCode, session: SessionDep,
                            _: Reader) -> Response:
    """The opened order as an EDIFACT ORDERS message (D96A, EDItEUR EAN008) for the vendor."""
    detail = await handlers.load_order(session, order_id)
    if detail.order.status == "draft" or detail.order.status == "cancelled":
        raise Conflict(f"the order is {detail.order.status}; only an opened order is sent")
    vendor = await session.get(Vendor, detail.order.vendor_id)
    assert vendor is not None
    text = edifact.orders_message(_edi_order(detail, vendor),
                                  interchange_ref=detail.order.order_id[-12:])
    return Response(edifact.encoded(text), media_type="application/edifact")


#: The acquisition center as EDI buyer (EAN location number of the general library).
BUYER_ID, BUYER_QUALIFIER = "BRANCHLINE", "91"


def edi_ref(uuid_text: str) -> str:
    """Our ids are 36-character UUIDs; EDIFACT references hold 35, so they go out as the
    32 hex digits and come back through `from_edi_ref`."""
    return uuid_text.replace("-", "")


def from_edi_ref(ref: str) -> str:
    """The id an EDIFACT reference stands for: 32 hex digits are a UUID without hyphens;
    anything else is taken as written."""
    try:
        return str(uuid.UUID(hex=ref)) if len(ref) == 32 else ref
    except ValueError:
        return ref


def _edi_order(detail: OrderDetail, vendor: Vendor) -> edifact.OrderOut:
    supplier, qualifier = ((vendor.gln, "14") if vendor.gln else
                           (vendor.san, "31B") if vendor.san else (vendor.vendor_id, "92"))
    issued = (detail.order.opened_at or detail.order.created_at).date()
    return edifact.OrderOut(
        order_id=edi_ref(detail.order.order_id), issued=issued, currency=detail.order.currency,
        buyer_id=BUYER_ID, buyer_qualifier=BUYER_QUALIFIER,
        supplier_id=supplier, supplier_qualifier=qualifier,
        lines=tuple(edifact.OrderLineOut(
            line_ref=edi_ref(ln.line_id), isbn=ln.isbn, title=ln.title, author=ln.author,
            publisher=ln.publisher, year=ln.year, quantity=ln.quantity - ln.cancelled,
            unit_price=ln.unit_price,
            distribution=tuple((d.branch, d.copies - d.cancelled)
                               for d in detail.distribution[ln.line_id]
                               if d.copies - d.cancelled > 0))
            for ln in detail.lines if ln.quantity - ln.cancelled > 0))


#: Uploaded files (quotes, invoices) are read whole; this is their cap.
MAX_UPLOAD = 5 * 1024 * 1024


async def _read_upload(file: UploadFile) -> bytes:
    data = await file.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise Invalid(f"the file is over {MAX_UPLOAD} bytes", field="file", kind="too_large")
    if not data.strip():
        raise Invalid("the file is empty", field="file", kind="empty")
    return data


class QuoteRowError(BaseModel):
    row: int
    field: str
    message: str


class QuoteImported(OrderCreated):
    lines: int


@router.post("/orders/import-quote", status_code=status.HTTP_201_CREATED,
             response_model=QuoteImported, tags=["edi"],
             openapi_extra={BODY_LIMIT_KEY: MAX_UPLOAD + 64 * 1024},
             responses={422: {"description": "rows that could not be read, each with its row "
                                             "number and column"}})
async def import_quote(
    service: ServiceDep, _: Staff,
    file: Annotated[UploadFile, File(description="CSV: isbn, quantity, price, formula "
                                                 "(+ title, author, publisher, year)")],
    vendor_id: Annotated[str, Query(min_length=1, max_length=64)],
    fund_code: Annotated[str, Query(min_length=1, max_length=64)],
    currency: Annotated[str, Query(pattern=r"^[A-Z]{3}$")] = "CNY",
) -> QuoteImported:
    """A vendor's quote list becomes one draft order. Any bad row refuses the whole file
    (422, every bad row listed with its number and column): half an order is worse than
    none; fix the rows and send it again."""
    rows, errors = quotes.parse_quote_csv(await _read_upload(file), max_rows=MAX_ORDER_LINES)
    if not errors and not rows:
        errors = [quotes.RowError(0, "file", "the file has no rows")]
    if errors:
        raise Invalid(f"{len(errors)} problem(s) in the quote list",
                      field=f"file.row{errors[0].row}.{errors[0].field}",
                      errors=[(f"file.row{e.row}.{e.field}", e.message) for e in errors],
                      kind="bad_rows")
    command = handlers.NewOrder(
        vendor_id=vendor_id, fund_code=fund_code, currency=currency,
        lines=[handlers.NewLine(isbn=r.isbn, title=r.title or r.isbn, author=r.author,
                                publisher=r.publisher, year=r.year, unit_price=r.unit_price,
                                quantity=r.quantity, formulas=[r.formula] if r.formula else [])
               for r in rows])
    async with service.uow() as uow:
        created = await handlers.create_order(uow, command)
    return QuoteImported(order_id=created.order.order_id, status=created.order.status,
                         lines=len(rows),
                         warnings=[WarningView.of(w) for w in created.warnings])


# --- invoices -------------------------------------------------------------------------------


class InvoiceLineIn(BaseModel):
    order_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    line_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    quantity: int = Field(ge=1, le=MAX_QUANTITY)
    amount: Money


class InvoiceIn(BaseModel):
    vendor_id: Code
    invoice_number: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                                     max_length=64)]
    currency: Currency
    lines: list[InvoiceLineIn] = Field(min_length=1, max_length=MAX_ORDER_LINES)


class InvoiceLineView(InvoiceLineIn):
    relieved: Decimal | None
    variance: Decimal | None


class InvoiceView(BaseModel):
    invoice_id: str
    vendor_id: str
    invoice_number: str
    currency: str
    status: str
    source: str
    total: Decimal
    created_at: datetime
    paid_at: datetime | None
    lines: list[InvoiceLineView]


async def _invoice_view(session: Any, invoice: Invoice) -> InvoiceView:
    lines = await handlers.invoice_lines(session, invoice.invoice_id)
    return InvoiceView(
        invoice_id=invoice.invoice_id, vendor_id=invoice.vendor_id,
        invoice_number=invoice.invoice_number, currency=invoice.currency,
        status=invoice.status, source=invoice.source, created_at=invoice.created_at,
        paid_at=invoice.paid_at, total=sum((ln.amount for ln in lines), Decimal("0")),
        lines=[InvoiceLineView(order_id=ln.order_id, line_id=ln.line_id,
                               quantity=ln.quantity, amount=ln.amount,
                               relieved=ln.relieved, variance=ln.variance) for ln in lines])


@router.post("/invoices", status_code=status.HTTP_201_CREATED, response_model=InvoiceView,
             tags=["invoices"])
async def post_invoice(body: InvoiceIn, service: ServiceDep, _: Staff) -> InvoiceView:
    """Record a vendor's invoice against order lines (409 if its number was seen)."""
    try:
        async with service.uow() as uow:
            invoice = await handlers.create_invoice(uow, handlers.NewInvoice(
                vendor_id=body.vendor_id, invoice_number=body.invoice_number,
                currency=body.currency,
                lines=[handlers.NewInvoiceLine(ln.order_id, ln.line_id, ln.quantity,
                                               ln.amount) for ln in body.lines]))
            view = await _invoice_view(uow.session, invoice)
    except IntegrityError as exc:  # the same number sent twice at once
        raise Conflict(f"vendor {body.vendor_id!r} already sent invoice "
                       f"{body.invoice_number!r}") from exc
    return view


@router.post("/invoices/edifact", status_code=status.HTTP_201_CREATED,
             response_model=list[InvoiceView], tags=["edi"],
             openapi_extra={BODY_LIMIT_KEY: MAX_UPLOAD + 64 * 1024})
async def import_invoic(
    service: ServiceDep, _: Staff,
    file: Annotated[UploadFile, File(description="EDIFACT INVOIC interchange")],
    vendor_id: Annotated[str, Query(min_length=1, max_length=64)],
) -> list[InvoiceView]:
    """Invoices from a vendor's EDIFACT INVOIC: each line names our order line (RFF+LI,
    as sent in the ORDERS message). Nothing is recorded unless every invoice fits."""
    try:
        messages = edifact.parse_invoic(await _read_upload(file))
    except edifact.EdifactError as exc:
        raise Invalid(str(exc), field="file" + (f".{exc.field}" if exc.field else ""),
                      kind="not_edifact") from exc
    out = []
    async with service.uow() as uow:
        for m, message in enumerate(messages):
            lines = []
            for i, line in enumerate(message.lines):
                if not line.line_ref:
                    raise Invalid(f"invoice {message.invoice_number}: line {line.position} "
                                  "names no order line (RFF+LI)",
                                  field=f"file.invoices.{m}.lines.{i}.line_ref")
                ordered = await uow.session.get(OrderLine, from_edi_ref(line.line_ref))
                if ordered is None:
                    raise Invalid(f"invoice {message.invoice_number}: no order line "
                                  f"{line.line_ref!r}",
                                  field=f"file.invoices.{m}.lines.{i}.line_ref")
                lines.append(handlers.NewInvoiceLine(ordered.order_id, ordered.line_id,
                                                     line.quantity, line.amount))
            invoice = await handlers.create_invoice(uow, handlers.NewInvoice(
                vendor_id=vendor_id, invoice_number=message.invoice_number,
                currency=message.currency or "CNY", lines=lines, source="edifact"))
            out.append(await _invoice_view(uow.session, invoice))
    return out


@router.get("/invoices", response_model=list[InvoiceView], tags=["invoices"])
async def list_invoices(
    session: SessionDep, _: Reader,
    status_: Annotated[Literal["draft", "paid"] | None, Query(alias="status")] = None,
    vendor_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[InvoiceView]:
    query = select(Invoice).order_by(col(Invoice.created_at).desc()).limit(limit)
    if status_:
        query = query.where(col(Invoice.status) == status_)
    if vendor_id:
        query = query.where(col(Invoice.vendor_id) == vendor_id)
    return [await _invoice_view(session, i) for i in (await session.exec(query)).all()]


@router.get("/invoices/{invoice_id}", response_model=InvoiceView, tags=["invoices"])
async def get_invoice(invoice_id: PathCode, session: SessionDep, _: Reader) -> InvoiceView:
    invoice = await session.get(Invoice, invoice_id)
    if invoice is None:
        raise NotFound(f"no invoice {invoice_id!r}")
    return await _invoice_view(session, invoice)


@router.post("/invoices/{invoice_id}/pay", response_model=InvoiceView, tags=["invoices"])
async def post_pay(invoice_id: PathCode, service: ServiceDep, _: Staff) -> InvoiceView:
    """Pay: each line's copies leave the encumbrance and the billed amount is spent (the
    difference is the line's variance); 409 if already paid or more copies than ordered."""
    async with service.uow() as uow:
        invoice = await handlers.pay_invoice(uow, invoice_id)
        return await _invoice_view(uow.session, invoice)

