"""Acquisition's use cases: each runs inside the caller's transaction (state + outbox).

HTTP requests (vendors, funds, formulas, orders, receipts, invoices) and the consumed
events (`network.site_upserted`, `cataloging.item_cataloged`) each map to one function
here. Rows whose totals several requests may change at once are locked with `FOR UPDATE`,
always order before funds and funds in code order, so two receipts never both take the
last copy, two openings never both spend the same budget, and nothing deadlocks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from decimal import Decimal
from typing import Any

from sqlalchemy import ARRAY, Integer, String, Table, TextClause, bindparam, func, text
from sqlalchemy import select as sa_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.acquisition import domain
from services.acquisition.domain import InvalidInput
from services.acquisition.models import (
    SCHEMA,
    DistributionFormula,
    Fund,
    HeldCopy,
    Invoice,
    InvoiceLine,
    LineDistribution,
    OrderLine,
    PurchaseOrder,
    Site,
    Vendor,
)
from shared.contracts import Envelope, Event, new_id, utcnow
from shared.contracts.acquisition import (
    CancelledLine,
    CopiesReceived,
    Distribution,
    OrderCancelled,
    OrderClosed,
    OrderLineData,
    OrderOpened,
)
from shared.contracts.acquisition import ReceivedCopy as ReceivedCopyData
from shared.contracts.cataloging import ItemCataloged, ItemWithdrawn
from shared.contracts.logistics import SiteUpserted
from shared.errors import Conflict, NotFound
from shared.messaging.consumer import Handlers
from shared.messaging.unit_of_work import SqlUnitOfWork, UnitOfWork

handlers = Handlers()

#: Bytes of lines (or copies) per event: a large order goes out as several events, each
#: well under the backbone's 1 MiB record limit (the envelope and headers fit in the rest).
EVENT_BUDGET = 512 * 1024
#: Copies per `acquisition.copies_received` event.
COPIES_PER_EVENT = 2_000

# --- commands -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewLine:
    isbn: str
    title: str
    unit_price: Decimal
    quantity: int
    distribution: Sequence[domain.Share] = ()
    author: str | None = None
    publisher: str | None = None
    year: int | None = None
    fund_code: str | None = None
    formulas: Sequence[str] = ()


@dataclass(frozen=True)
class NewOrder:
    vendor_id: str
    fund_code: str
    currency: str
    lines: Sequence[NewLine]


@dataclass(frozen=True)
class VendorData:
    vendor_id: str
    name: str
    contact_name: str | None = None
    email: str | None = None
    phone: str | None = None
    address: str | None = None
    currency: str = "CNY"
    san: str | None = None
    gln: str | None = None
    discount_percent: Decimal = Decimal("0")
    active: bool = True


@dataclass(frozen=True)
class FundData:
    fund_code: str
    name: str
    budget: Decimal
    currency: str
    fiscal_year: int = 2026
    site: str | None = None
    warn_percent: Decimal = Decimal("90")
    stop_percent: Decimal = Decimal("100")


# --- vendors and funds ----------------------------------------------------------------------


async def add_vendor(uow: UnitOfWork, vendor_id: str, name: str, **details: Any) -> Vendor:
    if await uow.repo(Vendor).get(vendor_id) is not None:
        raise Conflict(f"vendor {vendor_id!r} already exists")
    vendor = Vendor(vendor_id=vendor_id, name=name, **details)
    uow.repo(Vendor).add(vendor)
    return vendor


async def put_vendor(uow: UnitOfWork, data: VendorData) -> Vendor:
    """Create or replace a vendor's details (orders keep the vendor id)."""
    vendor = await uow.repo(Vendor).get(data.vendor_id)
    values = {k: v for k, v in data.__dict__.items() if k != "vendor_id"}
    if vendor is None:
        vendor = Vendor(vendor_id=data.vendor_id, **values)
        uow.repo(Vendor).add(vendor)
    else:
        for key, value in values.items():
            setattr(vendor, key, value)
    return vendor


async def add_fund(uow: UnitOfWork, fund_code: str, name: str, budget: Decimal,
                   currency: str, **details: Any) -> Fund:
    if await uow.repo(Fund).get(fund_code) is not None:
        raise Conflict(f"fund {fund_code!r} already exists")
    if details.get("site") and isinstance(uow, SqlUnitOfWork):
        await _check_site(uow, details["site"], ("site",))
    warn = details.get("warn_percent", Decimal("90"))
    stop = details.get("stop_percent", Decimal("100"))
    if warn > stop:
        raise InvalidInput(f"warn_percent {warn} is above stop_percent {stop}",
                           ("warn_percent",))
    fund = Fund(fund_code=fund_code, name=name, budget=budget, currency=currency,
                encumbered=Decimal("0"), spent=Decimal("0"), **details)
    uow.repo(Fund).add(fund)
    return fund


def balance_of(fund: Fund) -> domain.FundBalance:
    return domain.FundBalance(fund.budget, fund.encumbered, fund.spent, fund.currency,
                              fund.warn_percent, fund.stop_percent, fund.fund_code)


def _apply_balance(fund: Fund, balance: domain.FundBalance) -> None:
    fund.encumbered, fund.spent = balance.encumbered, balance.spent


async def _locked_funds(uow: SqlUnitOfWork, codes: Iterable[str]) -> dict[str, Fund]:
    """Funds locked in code order (two transactions never wait on each other in a ring)."""
    wanted = sorted(set(codes))
    rows = (await uow.session.exec(select(Fund).where(col(Fund.fund_code).in_(wanted))
                                   .order_by(col(Fund.fund_code)).with_for_update())).all()
    funds = {f.fund_code: f for f in rows}
    missing = [c for c in wanted if c not in funds]
    if missing:  # lines refer to funds by foreign key; this is a broken database
        raise RuntimeError(f"funds {missing} of an order are missing")
    return funds


@dataclass
class Rollover:
    from_fund: str
    to_fund: str
    lines: int
    amount: Decimal


async def rollover_fund(uow: SqlUnitOfWork, fund_code: str, to_fund_code: str) -> Rollover:
    """Year end, as Koha and Evergreen do it: every line still holding an encumbrance on
    this fund moves it, and its fund, to the next year's fund; this fund takes no new
    orders after."""
    if fund_code == to_fund_code:
        raise InvalidInput("a fund cannot roll over into itself", ("to_fund_code",))
    target = await uow.repo(Fund).get(to_fund_code)
    if target is None:
        raise InvalidInput(f"unknown fund {to_fund_code!r}", ("to_fund_code",))
    funds = await _locked_funds(uow, [fund_code, to_fund_code]) \
        if await uow.repo(Fund).get(fund_code) else {}
    if fund_code not in funds:
        raise NotFound(f"no fund with code {fund_code!r}")
    source, target = funds[fund_code], funds[to_fund_code]
    if source.rolled_over_to:
        raise Conflict(f"fund {fund_code!r} was already rolled over into "
                       f"{source.rolled_over_to!r}")
    if target.currency != source.currency:
        raise InvalidInput(f"fund {to_fund_code!r} is kept in {target.currency}, not "
                           f"{source.currency}", ("to_fund_code",))
    if target.fiscal_year <= source.fiscal_year:
        raise InvalidInput(f"fund {to_fund_code!r} is for {target.fiscal_year}, not after "
                           f"{source.fiscal_year}", ("to_fund_code",))
    rows = (await uow.session.exec(
        select(OrderLine).join(PurchaseOrder, col(PurchaseOrder.order_id) ==
                               col(OrderLine.order_id))
        .where(func.coalesce(col(OrderLine.fund_code), col(PurchaseOrder.fund_code))
               == fund_code, col(OrderLine.encumbered) > 0).with_for_update())).all()
    amount = sum((ln.encumbered for ln in rows), Decimal("0"))
    for line in rows:
        line.fund_code = to_fund_code
    source.encumbered -= amount
    target.encumbered += amount
    source.rolled_over_to = to_fund_code
    return Rollover(fund_code, to_fund_code, len(rows), amount)


# --- distribution formulas ------------------------------------------------------------------


async def put_formula(uow: SqlUnitOfWork, name: str,
                      entries: Sequence[tuple[str, int]]) -> DistributionFormula:
    domain.check_formula(entries)
    seen: set[str] = set()
    for i, (branch, _) in enumerate(entries):
        if branch in seen:
            raise InvalidInput(f"branch {branch!r} appears more than once",
                               ("entries", i, "branch"))
        seen.add(branch)
    await _check_sites(uow, {(b, ("entries", i, "branch")) for i, (b, _) in enumerate(entries)})
    formula = await uow.session.get(DistributionFormula, name)
    rows: list[list[str | int]] = [[b, n] for b, n in entries]
    if formula is None:
        formula = DistributionFormula(name=name, entries=rows, updated_at=utcnow())
        uow.session.add(formula)
    else:
        formula.entries, formula.updated_at = rows, utcnow()
    return formula


def formula_entries(formula: DistributionFormula) -> list[tuple[str, int]]:
    return [(str(b), int(n)) for b, n in formula.entries]


# --- orders ---------------------------------------------------------------------------------


async def _sites_known(uow: SqlUnitOfWork) -> bool:
    return (await uow.session.exec(select(Site.code).limit(1))).first() is not None


async def _check_sites(uow: SqlUnitOfWork,
                       named: Iterable[tuple[str, tuple[str | int, ...]]]) -> None:
    """Branches must be active known sites, once acquisition has heard of any site."""
    named = list(named)
    codes = {code for code, _ in named}
    sites = {s.code: s for s in
             (await uow.session.exec(select(Site).where(col(Site.code).in_(codes)))).all()}
    if not sites and not await _sites_known(uow):
        return
    for code, path in sorted(named, key=lambda x: [str(p) for p in x[1]]):
        site = sites.get(code)
        if site is None:
            raise InvalidInput(f"unknown branch {code!r}", path)
        if not site.active:
            raise InvalidInput(f"branch {code!r} is not active", path)


async def _check_site(uow: SqlUnitOfWork, code: str, path: tuple[str | int, ...]) -> None:
    await _check_sites(uow, [(code, path)])


@dataclass
class OrderWarning:
    """Something staff should see, that does not stop the request."""

    field: str
    kind: str
    message: str
    detail: dict[str, Any] = dc_field(default_factory=dict)


async def check_order(uow: UnitOfWork, order: NewOrder) -> Vendor:
    """Refuse an order naming an unknown vendor or fund, another currency than a fund's, a
    closed fund, or a distribution that does not fit (each a 422 naming the field)."""
    vendor = await uow.repo(Vendor).get(order.vendor_id)
    if vendor is None:
        raise InvalidInput(f"unknown vendor {order.vendor_id!r}", ("vendor_id",))
    if not vendor.active:
        raise InvalidInput(f"vendor {order.vendor_id!r} is not active", ("vendor_id",))
    named = [(order.fund_code, ("fund_code",))] + [
        (ln.fund_code, ("lines", i, "fund_code")) for i, ln in enumerate(order.lines)
        if ln.fund_code]
    for code, path in named:
        fund = await uow.repo(Fund).get(code)
        if fund is None:
            raise InvalidInput(f"unknown fund {code!r}", path)
        if fund.rolled_over_to:
            raise InvalidInput(f"fund {code!r} was closed by a rollover into "
                               f"{fund.rolled_over_to!r}", path)
        if order.currency != fund.currency:
            raise InvalidInput(f"fund {fund.fund_code!r} is kept in {fund.currency}, not "
                               f"{order.currency}",
                               path if path != ("fund_code",) else ("currency",))
    for i, line in enumerate(order.lines):
        try:
            domain.check_distribution(line.quantity, line.distribution)
        except InvalidInput as exc:
            raise InvalidInput(exc.message, ("lines", i, "distribution")) from exc
    return vendor


async def _formulas(uow: SqlUnitOfWork, order: NewOrder) -> dict[str, list[tuple[str, int]]]:
    names = {name for line in order.lines for name in line.formulas}
    if not names:
        return {}
    rows = (await uow.session.exec(select(DistributionFormula).where(
        col(DistributionFormula.name).in_(names)))).all()
    found = {f.name: formula_entries(f) for f in rows}
    for i, line in enumerate(order.lines):
        for j, name in enumerate(line.formulas):
            if name not in found:
                raise InvalidInput(f"unknown distribution formula {name!r}",
                                   ("lines", i, "formulas", j))
    return found


@dataclass
class CreatedOrder:
    order: PurchaseOrder
    warnings: list[OrderWarning]


async def create_order(uow: SqlUnitOfWork, order: NewOrder) -> CreatedOrder:
    """Record a draft order: nothing is promised from a fund until it is opened.

    Formulas are applied to each line after its own entries; copies left unallocated are
    kept and shown (the order cannot open until every copy has a branch).
    """
    vendor = await check_order(uow, order)
    formulas = await _formulas(uow, order)
    allocations = []
    for i, line in enumerate(order.lines):
        try:
            allocations.append(domain.allocate(
                line.quantity, line.distribution,
                [(name, formulas[name]) for name in line.formulas]))
        except InvalidInput as exc:
            raise InvalidInput(exc.message, ("lines", i, "distribution")) from exc
    await _check_sites(uow, [(share.branch, ("lines", i, "distribution", j, "branch"))
                             for i, line in enumerate(order.lines)
                             for j, share in enumerate(line.distribution)])

    po = PurchaseOrder(order_id=new_id(), vendor_id=order.vendor_id,
                       fund_code=order.fund_code, currency=order.currency,
                       status="draft", created_at=utcnow())
    rows = [
        OrderLine(line_id=new_id(), order_id=po.order_id, position=position,
                  isbn=domain.normalise_isbn(line.isbn),
                  isbn_valid=domain.isbn_checks_out(line.isbn), title=line.title,
                  author=line.author, publisher=line.publisher, year=line.year,
                  unit_price=line.unit_price, quantity=line.quantity,
                  fund_code=line.fund_code if line.fund_code != order.fund_code else None,
                  estimated_price=domain.net_price(line.unit_price, vendor.discount_percent))
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
        for row, allocation in zip(rows, allocations, strict=True)
        for k, share in enumerate(allocation.shares)
    )
    warnings: list[OrderWarning] = []
    for i, (row, allocation) in enumerate(zip(rows, allocations, strict=True)):
        if not row.isbn_valid:
            warnings.append(OrderWarning(f"lines.{i}.isbn", "invalid_isbn",
                                    f"{row.isbn!r} is not a valid ISBN-10 or ISBN-13; kept "
                                    "as given"))
        if allocation.unallocated:
            warnings.append(OrderWarning(f"lines.{i}.distribution", "unallocated",
                                    f"{allocation.unallocated} of {row.quantity} copies have "
                                    "no branch yet", {"copies": allocation.unallocated}))
        for name, branch, copies in allocation.not_applied:
            warnings.append(OrderWarning(f"lines.{i}.formulas", "not_applied",
                                    f"formula {name!r}: {copies} copies for {branch} did not "
                                    "fit in the line's quantity",
                                    {"formula": name, "branch": branch, "copies": copies}))
    warnings += await duplicate_warnings(uow, po.order_id, rows)
    return CreatedOrder(po, warnings)


async def duplicate_warnings(uow: SqlUnitOfWork, order_id: str,
                             lines: Sequence[OrderLine]) -> list[OrderWarning]:
    """A line's ISBN already held in the network, or open on another order: how many
    copies and where. A warning, never a refusal (a second copy may be meant)."""
    isbns = {ln.isbn for ln in lines if ln.isbn_valid}
    if not isbns:
        return []
    held: dict[str, dict[str, int]] = defaultdict(dict)
    for isbn, branch, copies in (await uow.session.exec(
            select(HeldCopy.isbn, HeldCopy.owning_branch, func.count())
            .where(col(HeldCopy.isbn).in_(isbns))
            .group_by(col(HeldCopy.isbn), col(HeldCopy.owning_branch)))).all():
        held[isbn][branch] = int(copies)
    ordered: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for isbn, other, copies in (await uow.session.exec(
            select(OrderLine.isbn, OrderLine.order_id,
                   func.sum(col(OrderLine.quantity) - col(OrderLine.received)
                            - col(OrderLine.cancelled)))
            .join(PurchaseOrder, col(PurchaseOrder.order_id) == col(OrderLine.order_id))
            .where(col(OrderLine.isbn).in_(isbns), col(OrderLine.order_id) != order_id,
                   col(PurchaseOrder.status).in_(["draft", *domain.RECEIVING]))
            .group_by(col(OrderLine.isbn), col(OrderLine.order_id)))).all():
        if copies and int(copies) > 0:
            ordered[isbn].append({"order_id": other, "copies": int(copies)})
    warnings = []
    for i, line in enumerate(lines):
        if line.isbn in held or line.isbn in ordered:
            have = sum(held[line.isbn].values()) if line.isbn in held else 0
            coming = sum(o["copies"] for o in ordered.get(line.isbn, []))
            warnings.append(OrderWarning(
                f"lines.{i}.isbn", "duplicate",
                f"{line.isbn}: {have} copies held in the network, {coming} on other orders",
                {"held": dict(held.get(line.isbn, {})), "on_order": ordered.get(line.isbn, [])}))
    return warnings


@dataclass
class OrderDetail:
    order: PurchaseOrder
    lines: list[OrderLine]
    distribution: dict[str, list[LineDistribution]]  # line_id -> shares in fill order
    _by_id: dict[str, OrderLine] = dc_field(default_factory=dict, repr=False)

    @property
    def total(self) -> Decimal:
        return domain.order_total(domain.PricedLine(ln.estimated_price, ln.quantity)
                                  for ln in self.lines)

    def shares(self, line_id: str) -> list[domain.Share]:
        return [domain.Share(d.branch, d.copies, d.received, d.cancelled)
                for d in self.distribution.get(line_id, [])]

    def line(self, line_id: str, path: tuple[str | int, ...] = ("line_id",)) -> OrderLine:
        if len(self._by_id) != len(self.lines):
            self._by_id = {ln.line_id: ln for ln in self.lines}
        found = self._by_id.get(line_id)
        if found is None:
            raise InvalidInput(f"order {self.order.order_id!r} has no line {line_id!r}", path)
        return found


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
            .join(OrderLine, col(OrderLine.line_id) == col(LineDistribution.line_id))
            .where(col(OrderLine.order_id) == order_id)
            .order_by(col(LineDistribution.line_id), col(LineDistribution.position))
        )).all()
        for row in rows:
            distribution[row.line_id].append(row)
    return OrderDetail(order, lines, distribution)


def _fund_of(order: PurchaseOrder, line: OrderLine) -> str:
    return line.fund_code or order.fund_code


def _money(line: OrderLine) -> domain.LineMoney:
    return domain.LineMoney(line.estimated_price, line.quantity, line.cancelled, line.invoiced,
                            line.encumbered, line.spent)


def _set_money(line: OrderLine, money: domain.LineMoney) -> None:
    line.cancelled, line.invoiced = money.cancelled, money.invoiced
    line.encumbered, line.spent = money.encumbered, money.spent


@dataclass
class Opened:
    detail: OrderDetail
    warnings: list[OrderWarning]


async def open_order(uow: SqlUnitOfWork, order_id: str) -> Opened:
    """Encumber each line's value on its fund and tell the network what is coming.

    Refused (409) when a line still has copies without a branch, or when a fund would
    pass its stop percentage (naming the fund and the shortfall); past the warn
    percentage it opens with a warning.
    """
    detail = await load_order(uow.session, order_id, lock=True)
    order = detail.order
    order.status = domain.transition(order.status, "open")
    for i, line in enumerate(detail.lines):
        placed = sum(d.copies for d in detail.distribution[line.line_id])
        if placed < line.quantity:
            raise Conflict(f"lines.{i}: {line.quantity - placed} of {line.quantity} copies "
                           "have no branch yet; complete the distribution before opening")
    per_fund: dict[str, Decimal] = defaultdict(Decimal)
    for line in detail.lines:
        money = _money(line).opened()
        _set_money(line, money)
        per_fund[_fund_of(order, line)] += money.encumbered
    funds = await _locked_funds(uow, per_fund)
    warnings = []
    for code in sorted(per_fund):
        fund = funds[code]
        balance = balance_of(fund).encumber(per_fund[code])
        _apply_balance(fund, balance)
        if balance.warns():
            warnings.append(OrderWarning("fund_code", "fund_warn",
                                    f"fund {code!r} is now {balance.committed} of "
                                    f"{balance.budget} {balance.currency} committed, past "
                                    f"its warning at {fund.warn_percent}%",
                                    {"fund_code": code}))
    order.opened_at = utcnow()
    _announce_opened(uow, detail)
    return Opened(detail, warnings)


def _announce_opened(uow: UnitOfWork, detail: OrderDetail) -> None:
    """`acquisition.order_opened`, split into parts when the lines would pass the record
    size: each part carries whole lines, so each can be applied on its own."""
    order = detail.order
    lines = [
        OrderLineData(
            line_id=ln.line_id, isbn=ln.isbn, title=ln.title, author=ln.author,
            publisher=ln.publisher, year=ln.year, unit_price=ln.unit_price,
            quantity=ln.quantity, fund_code=ln.fund_code,
            distribution=[Distribution(branch=d.branch, copies=d.copies)
                          for d in detail.distribution[ln.line_id]],
        )
        for ln in detail.lines
    ]
    runs = domain.chunks(lines, lambda ln: len(ln.model_dump_json()), EVENT_BUDGET)
    for part, run in enumerate(runs, start=1):
        uow.emit(OrderOpened(order_id=order.order_id, vendor_id=order.vendor_id,
                             fund_code=order.fund_code, currency=order.currency, lines=run,
                             part=part, parts=len(runs)),
                 subject=order.order_id)


@dataclass(frozen=True)
class ReceiptLine:
    line_id: str
    quantity: int


async def receive_copies(uow: SqlUnitOfWork, order_id: str,
                         lines: Sequence[ReceiptLine]) -> list[domain.ReceivedCopy]:
    """Record copies that arrived and give each its owning branch in distribution order.

    Money does not move on receipt: the line stays encumbered until its invoice is paid.
    When every copy is received or cancelled the order stops receiving
    (`acquisition.order_closed`).

    A receipt may hold thousands of copies (a new branch stocked in one delivery), so the
    order's lines and shares are read and written as plain rows in a few set-based
    statements rather than as ORM objects row by row; the order row itself is locked.
    """
    session = uow.session
    order = await session.get(PurchaseOrder, order_id, with_for_update=True)
    if order is None:
        raise NotFound(f"no order with id {order_id!r}")
    if order.status not in domain.RECEIVING:
        raise Conflict(f"the order is {order.status}; copies are received only on an open "
                       "order")
    line_t, dist_t = _table(OrderLine), _table(LineDistribution)
    ordered = {r.line_id: r for r in (await session.execute(
        sa_select(line_t.c.line_id, line_t.c.isbn, line_t.c.title, line_t.c.author,
                  line_t.c.publisher, line_t.c.year, line_t.c.quantity, line_t.c.received,
                  line_t.c.cancelled, line_t.c.encumbered)
        .where(line_t.c.order_id == order_id))).all()}
    shares: dict[str, list[domain.Share]] = defaultdict(list)
    for r in (await session.execute(
            sa_select(dist_t.c.line_id, dist_t.c.branch, dist_t.c.copies, dist_t.c.received,
                      dist_t.c.cancelled)
            .join(line_t, line_t.c.line_id == dist_t.c.line_id)
            .where(line_t.c.order_id == order_id)
            .order_by(dist_t.c.line_id, dist_t.c.position))).all():
        shares[r.line_id].append(domain.Share(r.branch, r.copies, r.received, r.cancelled))
    seen: set[str] = set()
    now = utcnow()
    received: list[domain.ReceivedCopy] = []
    copy_rows: tuple[list[str], list[str], list[str]] = ([], [], [])
    share_rows: tuple[list[str], list[str], list[int]] = ([], [], [])
    more: dict[str, int] = {}
    for i, wanted in enumerate(lines):
        path: tuple[str | int, ...] = ("lines", i) if len(lines) > 1 else ()
        if wanted.line_id in seen:
            raise InvalidInput(f"line {wanted.line_id!r} is named twice", (*path, "line_id"))
        seen.add(wanted.line_id)
        line = ordered.get(wanted.line_id)
        if line is None:
            raise InvalidInput(f"order {order_id!r} has no line {wanted.line_id!r}",
                               (*path, "line_id"))
        try:
            receipt = domain.receive(shares[line.line_id], wanted.quantity)
        except InvalidInput as exc:
            raise InvalidInput(exc.message, (*path, "quantity")) from exc
        except domain.OverReceipt as exc:  # say which line of a many-line receipt
            raise domain.OverReceipt(exc.asked, exc.remaining,
                                     where=".".join(map(str, (*path, "quantity")))) from exc
        for before, after in zip(shares[line.line_id], receipt.shares, strict=True):
            if after.received != before.received:
                share_rows[0].append(line.line_id)
                share_rows[1].append(after.branch)
                share_rows[2].append(after.received)
        more[line.line_id] = wanted.quantity
        received += receipt.copies
        for c in receipt.copies:
            copy_rows[0].append(c.copy_id)
            copy_rows[1].append(line.line_id)
            copy_rows[2].append(c.owning_branch)
        for part, run in enumerate(runs := domain.chunks(receipt.copies, lambda _: 1,
                                                         COPIES_PER_EVENT), start=1):
            uow.emit(CopiesReceived(
                order_id=order_id, line_id=line.line_id, isbn=line.isbn,
                title=line.title, author=line.author, publisher=line.publisher,
                year=line.year, received_at=now, part=part, parts=len(runs),
                copies=[ReceivedCopyData(copy_id=c.copy_id, owning_branch=c.owning_branch)
                        for c in run]), subject=order_id)
    await session.execute(_RECEIVE_LINES, {"ids": list(more), "qs": list(more.values())})
    await session.execute(_RECEIVE_SHARES, {"ids": share_rows[0], "branches": share_rows[1],
                                            "received": share_rows[2]})
    await session.execute(_INSERT_COPIES, {"copies": copy_rows[0], "ids": copy_rows[1],
                                           "branches": copy_rows[2], "at": now})
    _settle_order(uow, order,
                  [domain.LineProgress(ln.quantity, ln.received + more.get(ln.line_id, 0),
                                       ln.cancelled) for ln in ordered.values()],
                  sum((ln.encumbered for ln in ordered.values()), Decimal("0")))
    return received


def _table(model: type[Any]) -> Table:
    table: Table = model.__table__
    return table


def _arrays(statement: str, **types: Any) -> TextClause:
    return text(statement).bindparams(*(bindparam(name, type_=ARRAY(t))
                                        for name, t in types.items()))


_RECEIVE_LINES = _arrays(
    f"UPDATE {SCHEMA}.order_line AS l SET received = l.received + u.q "
    "FROM unnest(:ids, :qs) AS u(id, q) WHERE l.line_id = u.id", ids=String, qs=Integer)
_RECEIVE_SHARES = _arrays(
    f"UPDATE {SCHEMA}.distribution AS d SET received = u.r "
    "FROM unnest(:ids, :branches, :received) AS u(id, b, r) "
    "WHERE d.line_id = u.id AND d.branch = u.b", ids=String, branches=String,
    received=Integer)
_INSERT_COPIES = _arrays(
    f"INSERT INTO {SCHEMA}.received_copy (copy_id, line_id, owning_branch, received_at) "
    "SELECT c, l, b, CAST(:at AS timestamptz) FROM unnest(:copies, :ids, :branches) AS u(c, l, b)",
    copies=String, ids=String, branches=String)


def _settle(uow: UnitOfWork, detail: OrderDetail) -> None:
    _settle_order(uow, detail.order,
                  [domain.LineProgress(ln.quantity, ln.received, ln.cancelled)
                   for ln in detail.lines],
                  sum((ln.encumbered for ln in detail.lines), Decimal("0")))


def _settle_order(uow: UnitOfWork, order: PurchaseOrder,
                  progress: Sequence[domain.LineProgress], encumbered: Decimal) -> None:
    """Move the order along by what its lines say; announce once that nothing more comes."""
    was = order.status
    order.status = domain.settled_status(progress, encumbered)
    if order.status in ("received", "closed", "cancelled") and order.settled_at is None:
        order.settled_at = order.closed_at = utcnow()
        if order.status != "cancelled":
            uow.emit(OrderClosed(order_id=order.order_id,
                                 received=sum(p.received for p in progress),
                                 cancelled=sum(p.cancelled for p in progress)),
                     subject=order.order_id)
    elif was != order.status and order.status == "closed":
        order.closed_at = utcnow()


@dataclass(frozen=True)
class LineCancel:
    line_id: str
    copies: int | None = None  # None: every copy still to come


async def cancel_lines(uow: SqlUnitOfWork, order_id: str, cancels: Sequence[LineCancel],
                       reason: str) -> OrderDetail:
    """Copies that will never come: their encumbrance returns to the fund."""
    detail = await load_order(uow.session, order_id, lock=True)
    order = detail.order
    if order.status not in domain.RECEIVING:
        raise Conflict(f"the order is {order.status}; only an open order's lines are "
                       "cancelled (a draft is simply cancelled whole)")
    released: dict[str, Decimal] = defaultdict(Decimal)
    out: list[CancelledLine] = []
    for i, cancel in enumerate(cancels):
        line = detail.line(cancel.line_id, ("lines", i, "line_id"))
        shares = detail.shares(line.line_id)
        copies = cancel.copies if cancel.copies is not None else sum(s.remaining
                                                                   for s in shares)
        if copies == 0 and cancel.copies is None:
            continue
        try:
            after = domain.cancel_copies(shares, copies)
        except InvalidInput as exc:
            raise InvalidInput(exc.message, ("lines", i, "copies")) from exc
        for row, share in zip(detail.distribution[line.line_id], after, strict=True):
            row.cancelled = share.cancelled
        money, amount = _money(line).cancel(copies)
        _set_money(line, money)
        released[_fund_of(order, line)] += amount
        out.append(CancelledLine(line_id=line.line_id, copies=copies))
    if not out:
        raise Conflict("nothing is still to come on the lines named")
    funds = await _locked_funds(uow, released)
    for code, amount in released.items():
        _apply_balance(funds[code], balance_of(funds[code]).release(amount))
    uow.emit(OrderCancelled(order_id=order.order_id, reason=reason,
                            line_ids=[c.line_id for c in out], lines=out),
             subject=order.order_id)
    _settle(uow, detail)
    if order.status == "cancelled":
        order.cancel_reason = reason
    return detail


async def cancel_order(uow: SqlUnitOfWork, order_id: str, reason: str) -> OrderDetail:
    """Stop an order: a draft is dropped; an opened order's copies still to come are
    cancelled, their encumbrance returns (copies already received stay)."""
    detail = await load_order(uow.session, order_id, lock=True)
    order = detail.order
    if order.status == "draft":
        order.status = domain.transition(order.status, "cancelled")
        order.closed_at = utcnow()
        order.cancel_reason = reason
        return detail
    domain.transition(order.status, "cancelled")
    return await cancel_lines(uow, order_id, [LineCancel(ln.line_id) for ln in detail.lines
                                              if ln.quantity - ln.received - ln.cancelled],
                              reason)


# --- invoices -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewInvoiceLine:
    order_id: str
    line_id: str
    quantity: int
    amount: Decimal


@dataclass(frozen=True)
class NewInvoice:
    vendor_id: str
    invoice_number: str
    currency: str
    lines: Sequence[NewInvoiceLine]
    source: str = "http"


async def create_invoice(uow: SqlUnitOfWork, data: NewInvoice) -> Invoice:
    """Record a vendor's invoice against order lines; money moves when it is paid."""
    vendor = await uow.repo(Vendor).get(data.vendor_id)
    if vendor is None:
        raise InvalidInput(f"unknown vendor {data.vendor_id!r}", ("vendor_id",))
    existing = (await uow.session.exec(select(Invoice.invoice_id).where(
        col(Invoice.vendor_id) == data.vendor_id,
        col(Invoice.invoice_number) == data.invoice_number))).first()
    if existing is not None:
        raise Conflict(f"vendor {data.vendor_id!r} already sent invoice "
                       f"{data.invoice_number!r} (invoice {existing})")
    line_ids = {ln.line_id for ln in data.lines}
    found = {ln.line_id: ln for ln in (await uow.session.exec(
        select(OrderLine).where(col(OrderLine.line_id).in_(line_ids)))).all()}
    orders = {o.order_id: o for o in (await uow.session.exec(select(PurchaseOrder).where(
        col(PurchaseOrder.order_id).in_({ln.order_id for ln in found.values()})))).all()}
    for i, item in enumerate(data.lines):
        line = found.get(item.line_id)
        if line is None or line.order_id != item.order_id:
            raise InvalidInput(f"order {item.order_id!r} has no line {item.line_id!r}",
                               ("lines", i, "line_id"))
        order = orders[line.order_id]
        if order.vendor_id != data.vendor_id:
            raise InvalidInput(f"order {order.order_id!r} is with vendor {order.vendor_id!r}",
                               ("lines", i, "order_id"))
        if order.currency != data.currency:
            raise InvalidInput(f"order {order.order_id!r} is in {order.currency}, not "
                               f"{data.currency}", ("currency",))
        if order.status == "draft" or order.status == "cancelled":
            raise InvalidInput(f"order {order.order_id!r} is {order.status}; only an opened "
                               "order is invoiced", ("lines", i, "order_id"))
    invoice = Invoice(invoice_id=new_id(), vendor_id=data.vendor_id,
                      invoice_number=data.invoice_number, currency=data.currency,
                      source=data.source, created_at=utcnow())
    uow.session.add(invoice)
    await uow.session.flush()
    uow.session.add_all(InvoiceLine(invoice_id=invoice.invoice_id, position=i,
                                    order_id=ln.order_id, line_id=ln.line_id,
                                    quantity=ln.quantity, amount=ln.amount)
                        for i, ln in enumerate(data.lines))
    return invoice


async def invoice_lines(session: AsyncSession, invoice_id: str) -> list[InvoiceLine]:
    return list((await session.exec(select(InvoiceLine).where(
        col(InvoiceLine.invoice_id) == invoice_id).order_by(col(InvoiceLine.position)))).all())


async def pay_invoice(uow: SqlUnitOfWork, invoice_id: str) -> Invoice:
    """Each line relieves its copies' encumbrance and spends what the vendor billed; the
    difference (price changes, shipping) is kept as the line's variance."""
    invoice = await uow.session.get(Invoice, invoice_id, with_for_update=True)
    if invoice is None:
        raise NotFound(f"no invoice {invoice_id!r}")
    if invoice.status == "paid":
        raise Conflict(f"invoice {invoice_id} was paid at {invoice.paid_at}")
    items = await invoice_lines(uow.session, invoice_id)
    details = {}
    for order_id in sorted({i.order_id for i in items}):  # orders, then funds: lock order
        details[order_id] = await load_order(uow.session, order_id, lock=True)
    moved: dict[str, list[tuple[Decimal, Decimal]]] = defaultdict(list)
    for i, item in enumerate(items):
        detail = details[item.order_id]
        line = detail.line(item.line_id, ("lines", i, "line_id"))
        try:
            money, relieved = _money(line).pay(item.quantity, item.amount)
        except domain.OverInvoice as exc:
            raise Conflict(f"lines.{i}: {exc.message}") from exc
        _set_money(line, money)
        item.relieved, item.variance = relieved, item.amount - relieved
        moved[_fund_of(detail.order, line)].append((relieved, item.amount))
    funds = await _locked_funds(uow, moved)
    for code, amounts in moved.items():
        balance = balance_of(funds[code])
        for relieved, amount in amounts:
            balance = balance.pay(relieved, amount)
        _apply_balance(funds[code], balance)
    for detail in details.values():
        _settle(uow, detail)
    invoice.status, invoice.paid_at = "paid", utcnow()
    return invoice


# --- consumed events ------------------------------------------------------------------------


@handlers.before_batch
async def prefetch(uow: UnitOfWork, events: Sequence[tuple[Envelope, Event]]) -> None:
    await uow.repo(Site).load({p.code for _, p in events if isinstance(p, SiteUpserted)})
    await uow.repo(HeldCopy).load({p.barcode for _, p in events
                                   if isinstance(p, ItemCataloged | ItemWithdrawn)})


@handlers.on(SiteUpserted)
async def on_site_upserted(uow: UnitOfWork, env: Envelope, data: SiteUpserted) -> None:
    await uow.repo(Site).put(Site(code=data.code, name=data.name, kind=data.kind,
                                  active=data.active))


@handlers.on(ItemCataloged)
async def on_item_cataloged(uow: UnitOfWork, env: Envelope, data: ItemCataloged) -> None:
    """Count the copy for the duplicate warning (by ISBN-13 and owning branch)."""
    if not data.isbn:
        return
    await uow.repo(HeldCopy).put(HeldCopy(barcode=data.barcode,
                                          isbn=domain.normalise_isbn(data.isbn),
                                          owning_branch=data.owning_branch))


@handlers.on(ItemWithdrawn)
async def on_item_withdrawn(uow: UnitOfWork, env: Envelope, data: ItemWithdrawn) -> None:
    """A withdrawn copy no longer counts as held."""
    copy = await uow.repo(HeldCopy).get(data.barcode)
    if copy is not None:
        await uow.repo(HeldCopy).remove(copy)
