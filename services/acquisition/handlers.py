"""Acquisition's use cases: each runs inside the caller's transaction (state + outbox).

HTTP requests (vendors, funds, orders, receipts) and the one consumed event type
(`network.site_upserted`) each map to one function here. Rows whose totals several
requests may change at once (an order, a fund) are locked with `FOR UPDATE`, order
before fund, so two receipts never both take the last copy and two orders never both
spend the same budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.acquisition import domain
from services.acquisition.domain import InvalidInput
from services.acquisition.models import (
    Fund,
    LineDistribution,
    OrderLine,
    PurchaseOrder,
    ReceivedCopy,
    Site,
    Vendor,
)
from shared.contracts import Envelope, Event, new_id, utcnow
from shared.contracts.acquisition import (
    CopiesReceived,
    Distribution,
    OrderCancelled,
    OrderClosed,
    OrderLineData,
    OrderOpened,
)
from shared.contracts.acquisition import ReceivedCopy as ReceivedCopyData
from shared.contracts.logistics import SiteUpserted
from shared.errors import Conflict, NotFound
from shared.messaging.consumer import Handlers
from shared.messaging.unit_of_work import SqlUnitOfWork, UnitOfWork

handlers = Handlers()

# --- commands -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewLine:
    isbn: str
    title: str
    unit_price: Decimal
    quantity: int
    distribution: Sequence[domain.Share]
    author: str | None = None
    publisher: str | None = None
    year: int | None = None


@dataclass(frozen=True)
class NewOrder:
    vendor_id: str
    fund_code: str
    currency: str
    lines: Sequence[NewLine]


# --- vendors and funds ----------------------------------------------------------------------


async def add_vendor(uow: UnitOfWork, vendor_id: str, name: str) -> Vendor:
    if await uow.repo(Vendor).get(vendor_id) is not None:
        raise Conflict(f"vendor {vendor_id!r} already exists")
    vendor = Vendor(vendor_id=vendor_id, name=name)
    uow.repo(Vendor).add(vendor)
    return vendor


async def add_fund(uow: UnitOfWork, fund_code: str, name: str, budget: Decimal,
                   currency: str) -> Fund:
    if await uow.repo(Fund).get(fund_code) is not None:
        raise Conflict(f"fund {fund_code!r} already exists")
    fund = Fund(fund_code=fund_code, name=name, budget=budget, currency=currency,
                encumbered=Decimal("0"), spent=Decimal("0"))
    uow.repo(Fund).add(fund)
    return fund


def balance_of(fund: Fund) -> domain.FundBalance:
    return domain.FundBalance(fund.budget, fund.encumbered, fund.spent, fund.currency)


def _apply_balance(fund: Fund, balance: domain.FundBalance) -> None:
    fund.encumbered, fund.spent = balance.encumbered, balance.spent


# --- orders ---------------------------------------------------------------------------------


async def _check_branches(uow: SqlUnitOfWork, order: NewOrder) -> None:
    """Branches must be known sites, once acquisition has heard of any site at all."""
    codes = {share.branch for line in order.lines for share in line.distribution}
    sites = {s.code: s for s in
             (await uow.session.exec(select(Site).where(col(Site.code).in_(codes)))).all()}
    if not sites and (await uow.session.exec(select(Site.code).limit(1))).first() is None:
        return
    for i, line in enumerate(order.lines):
        for j, share in enumerate(line.distribution):
            site = sites.get(share.branch)
            field = ("lines", i, "distribution", j, "branch")
            if site is None:
                raise InvalidInput(f"unknown branch {share.branch!r}", field)
            if not site.active:
                raise InvalidInput(f"branch {share.branch!r} is not active", field)


async def check_order(uow: UnitOfWork, order: NewOrder) -> None:
    """Refuse an order naming an unknown vendor or fund, another currency than the fund's,
    or a line whose distribution does not add up (each a 422 naming the field)."""
    if await uow.repo(Vendor).get(order.vendor_id) is None:
        raise InvalidInput(f"unknown vendor {order.vendor_id!r}", ("vendor_id",))
    fund = await uow.repo(Fund).get(order.fund_code)
    if fund is None:
        raise InvalidInput(f"unknown fund {order.fund_code!r}", ("fund_code",))
    if order.currency != fund.currency:
        raise InvalidInput(
            f"fund {fund.fund_code!r} is kept in {fund.currency}, not {order.currency}",
            ("currency",),
        )
    for i, line in enumerate(order.lines):
        try:
            domain.check_distribution(line.quantity, line.distribution)
        except InvalidInput as exc:
            raise InvalidInput(exc.message, ("lines", i, "distribution")) from exc


async def create_order(uow: SqlUnitOfWork, order: NewOrder) -> PurchaseOrder:
    """Record a pending order: nothing is promised from the fund until it is opened."""
    await check_order(uow, order)
    await _check_branches(uow, order)

    po = PurchaseOrder(order_id=new_id(), vendor_id=order.vendor_id,
                       fund_code=order.fund_code, currency=order.currency,
                       status="pending", created_at=utcnow())
    rows = [
        OrderLine(line_id=new_id(), order_id=po.order_id, position=position,
                  isbn=domain.normalise_isbn(line.isbn), title=line.title, author=line.author,
                  publisher=line.publisher, year=line.year, unit_price=line.unit_price,
                  quantity=line.quantity)
        for position, line in enumerate(order.lines)
    ]
    # Parents are flushed before children: the tables refer to each other by foreign key.
    uow.session.add(po)
    await uow.session.flush()
    uow.session.add_all(rows)
    await uow.session.flush()
    uow.session.add_all(
        LineDistribution(line_id=row.line_id, branch=share.branch, position=k,
                         copies=share.copies)
        for row, line in zip(rows, order.lines, strict=True)
        for k, share in enumerate(line.distribution)
    )
    return po


@dataclass
class OrderDetail:
    order: PurchaseOrder
    lines: list[OrderLine]
    distribution: dict[str, list[LineDistribution]]  # line_id -> shares in fill order

    @property
    def total(self) -> Decimal:
        return domain.order_total(domain.PricedLine(ln.unit_price, ln.quantity)
                                  for ln in self.lines)

    def shares(self, line_id: str) -> list[domain.Share]:
        return [domain.Share(d.branch, d.copies, d.received)
                for d in self.distribution.get(line_id, [])]


async def load_order(session: AsyncSession, order_id: str, *, lock: bool = False) -> OrderDetail:
    """An order with its lines and distributions; `lock` holds the order row till commit."""
    order = await session.get(PurchaseOrder, order_id, with_for_update=lock or None)
    if order is None:
        raise NotFound(f"no order with id {order_id!r}")
    lines = list((await session.exec(
        select(OrderLine).where(OrderLine.order_id == order_id)
        .order_by(col(OrderLine.position))
    )).all())
    distribution: dict[str, list[LineDistribution]] = {ln.line_id: [] for ln in lines}
    if lines:
        rows = (await session.exec(
            select(LineDistribution)
            .where(col(LineDistribution.line_id).in_(list(distribution)))
            .order_by(col(LineDistribution.line_id), col(LineDistribution.position))
        )).all()
        for row in rows:
            distribution[row.line_id].append(row)
    return OrderDetail(order, lines, distribution)


async def _locked_fund(uow: SqlUnitOfWork, fund_code: str) -> Fund:
    fund = await uow.session.get(Fund, fund_code, with_for_update=True)
    if fund is None:  # orders refer to funds by foreign key; this is a broken database
        raise RuntimeError(f"fund {fund_code!r} of an order is missing")
    return fund


async def open_order(uow: SqlUnitOfWork, order_id: str) -> OrderDetail:
    """Encumber the order's total on its fund and tell the network what is coming."""
    detail = await load_order(uow.session, order_id, lock=True)
    order = detail.order
    order.status = domain.transition(order.status, "open")
    fund = await _locked_fund(uow, order.fund_code)
    _apply_balance(fund, balance_of(fund).encumber(detail.total))
    order.opened_at = utcnow()
    uow.emit(
        OrderOpened(
            order_id=order.order_id, vendor_id=order.vendor_id, fund_code=order.fund_code,
            currency=order.currency,
            lines=[
                OrderLineData(
                    line_id=ln.line_id, isbn=ln.isbn, title=ln.title, author=ln.author,
                    publisher=ln.publisher, year=ln.year, unit_price=ln.unit_price,
                    quantity=ln.quantity,
                    distribution=[Distribution(branch=d.branch, copies=d.copies)
                                  for d in detail.distribution[ln.line_id]],
                )
                for ln in detail.lines
            ],
        ),
        subject=order.order_id,
    )
    return detail


async def receive_copies(uow: SqlUnitOfWork, order_id: str, line_id: str,
                         quantity: int) -> list[domain.ReceivedCopy]:
    """Record copies that arrived, give each its owning branch, and pay for them.

    The received copies' price moves from encumbered to spent. When every line is fully
    received the order closes.
    """
    detail = await load_order(uow.session, order_id, lock=True)
    order = detail.order
    if order.status != "open":
        raise Conflict(f"the order is {order.status}; copies are received only on an open order")
    line = next((ln for ln in detail.lines if ln.line_id == line_id), None)
    if line is None:
        raise InvalidInput(f"order {order_id!r} has no line {line_id!r}", ("line_id",))
    receipt = domain.receive(detail.shares(line_id), quantity)

    now = utcnow()
    for row, share in zip(detail.distribution[line_id], receipt.shares, strict=True):
        row.received = share.received
    line.received += quantity
    uow.session.add_all(
        ReceivedCopy(copy_id=c.copy_id, line_id=line_id, owning_branch=c.owning_branch,
                     received_at=now)
        for c in receipt.copies
    )
    fund = await _locked_fund(uow, order.fund_code)
    _apply_balance(fund, balance_of(fund).spend(line.unit_price * quantity))
    uow.emit(
        CopiesReceived(
            order_id=order.order_id, line_id=line_id, isbn=line.isbn, title=line.title,
            author=line.author, publisher=line.publisher, year=line.year,
            copies=[ReceivedCopyData(copy_id=c.copy_id, owning_branch=c.owning_branch)
                    for c in receipt.copies],
            received_at=now,
        ),
        subject=order.order_id,
    )
    if all(ln.received >= ln.quantity for ln in detail.lines):
        order.status = domain.transition(order.status, "closed")
        order.closed_at = now
        uow.emit(OrderClosed(order_id=order.order_id), subject=order.order_id)
    return receipt.copies


async def cancel_order(uow: SqlUnitOfWork, order_id: str, reason: str) -> OrderDetail:
    """Stop an order: copies not yet received will not come, so their encumbrance returns."""
    detail = await load_order(uow.session, order_id, lock=True)
    order = detail.order
    was = order.status
    order.status = domain.transition(order.status, "cancelled")
    order.closed_at = utcnow()
    order.cancel_reason = reason
    if was == "open":
        outstanding = domain.order_total(
            domain.PricedLine(ln.unit_price, ln.quantity - ln.received) for ln in detail.lines
        )
        fund = await _locked_fund(uow, order.fund_code)
        _apply_balance(fund, balance_of(fund).release(outstanding))
        # Only an opened order was announced; a pending one never left this service.
        uow.emit(
            OrderCancelled(order_id=order.order_id, reason=reason,
                           line_ids=[ln.line_id for ln in detail.lines
                                     if ln.received < ln.quantity]),
            subject=order.order_id,
        )
    return detail


# --- consumed events ------------------------------------------------------------------------


@handlers.before_batch
async def prefetch(uow: UnitOfWork, events: Sequence[tuple[Envelope, Event]]) -> None:
    await uow.repo(Site).load({p.code for _, p in events if isinstance(p, SiteUpserted)})


@handlers.on(SiteUpserted)
async def on_site_upserted(uow: UnitOfWork, env: Envelope, data: SiteUpserted) -> None:
    await uow.repo(Site).put(Site(code=data.code, name=data.name, kind=data.kind,
                                  active=data.active))
