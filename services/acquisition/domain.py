"""Acquisition's rules, free of I/O: order totals, distributions, fund checks, receiving.

The acquisition center buys for the whole network: each order line's copies are split
across owning branches (a distribution), the order encumbers its fund when opened, and
copies are received against the distribution in order, possibly over several deliveries.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal, TypeVar

import isbnlib

from shared.errors import Conflict, Invalid, NotFound

__all__ = ["Conflict", "InvalidInput", "NotFound"]

T = TypeVar("T")

OrderStatus = Literal["draft", "open", "partially_received", "received", "closed",
                      "cancelled"]

#: Which statuses an order may be moved to by staff from each status. Receiving, cancelling
#: lines and paying move it along open → partially_received → received → closed by
#: themselves (`settled_status`).
TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"open", "cancelled"}),
    "open": frozenset({"cancelled"}),
    "partially_received": frozenset({"cancelled"}),
    "received": frozenset(),
    "closed": frozenset(),
    "cancelled": frozenset(),
}
RECEIVING = frozenset({"open", "partially_received"})


class InvalidInput(Invalid):
    """The request names something that does not fit (a bad distribution, an unknown fund).

    `path` is the offending field as a path (`("lines", 0, "distribution")`).
    """

    def __init__(self, message: str, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(message, field=".".join(str(p) for p in path), kind="value_error")
        self.path = path


class OverBudget(Conflict):
    def __init__(self, shortfall: Decimal, amount: Decimal, available: Decimal,
                 currency: str, fund_code: str = "") -> None:
        name = f"fund {fund_code!r}" if fund_code else "the fund"
        super().__init__(
            f"{name}: this order's {amount} {currency} exceeds what may still be committed "
            f"({available} {currency}) by {shortfall} {currency}"
        )
        self.shortfall = shortfall
        self.fund_code = fund_code


class OverReceipt(Conflict):
    def __init__(self, asked: int, remaining: int, where: str = "quantity") -> None:
        super().__init__(f"{where}: cannot receive {asked} copies: only {remaining} remain "
                         "on this line")
        self.asked = asked
        self.remaining = remaining


class WrongStatus(Conflict):
    def __init__(self, status: str, wanted: str) -> None:
        super().__init__(f"the order is {status}; it cannot become {wanted}")
        self.status = status


def transition(status: str, to: str) -> str:
    """Move an order draft → open, or cancel it, or refuse."""
    if to not in TRANSITIONS.get(status, frozenset()):
        raise WrongStatus(status, to)
    return to


# --- money ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PricedLine:
    unit_price: Decimal
    quantity: int


def line_total(line: PricedLine) -> Decimal:
    return line.unit_price * line.quantity


def order_total(lines: Iterable[PricedLine]) -> Decimal:
    return sum((line_total(line) for line in lines), Decimal("0"))


@dataclass(frozen=True)
class FundBalance:
    """A fund's money: its budget, what open orders have promised, what was paid.

    Always budget = encumbered + spent + available. Opening refuses past `stop_percent`
    of the budget committed (encumbered + spent) and warns past `warn_percent`.
    """

    budget: Decimal
    encumbered: Decimal
    spent: Decimal
    currency: str
    warn_percent: Decimal = Decimal("90")
    stop_percent: Decimal = Decimal("100")
    fund_code: str = ""

    @property
    def available(self) -> Decimal:
        return self.budget - self.encumbered - self.spent

    @property
    def committed(self) -> Decimal:
        return self.encumbered + self.spent

    def limit(self, percent: Decimal) -> Decimal:
        return (self.budget * percent / 100).quantize(CENT, rounding=ROUND_HALF_UP)

    def encumber(self, amount: Decimal) -> FundBalance:
        """Promise `amount` to an order being opened; refuse past the stop percentage."""
        stop = self.limit(self.stop_percent)
        if self.committed + amount > stop:
            raise OverBudget(self.committed + amount - stop, amount, stop - self.committed,
                             self.currency, self.fund_code)
        return replace(self, encumbered=self.encumbered + amount)

    def warns(self) -> bool:
        return self.committed > self.limit(self.warn_percent)

    def pay(self, relieved: Decimal, amount: Decimal) -> FundBalance:
        """An invoice paid: `relieved` leaves the encumbrance, `amount` is spent."""
        return replace(self, encumbered=self.encumbered - relieved, spent=self.spent + amount)

    def release(self, amount: Decimal) -> FundBalance:
        """Copies that will never come give their encumbrance back."""
        return replace(self, encumbered=self.encumbered - amount)


CENT = Decimal("0.01")


def net_price(list_price: Decimal, discount_percent: Decimal) -> Decimal:
    """One copy's price net of the vendor's discount, to the cent: what it encumbers."""
    return (list_price * (100 - discount_percent) / 100).quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class LineMoney:
    """What one order line holds: copies ordered, cancelled, invoiced; money encumbered."""

    estimated_price: Decimal
    quantity: int
    cancelled: int = 0
    invoiced: int = 0
    encumbered: Decimal = Decimal("0")
    spent: Decimal = Decimal("0")

    @property
    def live(self) -> int:
        """Copies still expected to be paid for: ordered, not cancelled, not invoiced."""
        return self.quantity - self.cancelled - self.invoiced

    def opened(self) -> LineMoney:
        return replace(self, encumbered=self.estimated_price * (self.quantity - self.cancelled))

    def cancel(self, copies: int) -> tuple[LineMoney, Decimal]:
        """Cancel `copies` not received; returns the line and the encumbrance released."""
        released = min(self.encumbered, self.estimated_price * copies)
        return replace(self, cancelled=self.cancelled + copies,
                       encumbered=self.encumbered - released), released

    def pay(self, copies: int, amount: Decimal) -> tuple[LineMoney, Decimal]:
        """An invoice line paid: relieves the copies' encumbrance (never more than is
        left); returns the line and what was relieved. amount - relieved is the variance."""
        if copies > self.live:
            raise OverInvoice(copies, self.live)
        relieved = min(self.encumbered, self.estimated_price * copies)
        return replace(self, invoiced=self.invoiced + copies,
                       encumbered=self.encumbered - relieved,
                       spent=self.spent + amount), relieved


class OverInvoice(Conflict):
    def __init__(self, asked: int, left: int) -> None:
        super().__init__(f"cannot invoice {asked} copies: only {left} remain ordered and not "
                         "yet invoiced on this line")


# --- distribution ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """One branch's part of an order line: copies it gets, how many arrived, were cancelled."""

    branch: str
    copies: int
    received: int = 0
    cancelled: int = 0

    @property
    def remaining(self) -> int:
        return self.copies - self.received - self.cancelled


def check_distribution(quantity: int, shares: Sequence[Share]) -> None:
    """Each branch appears once, and no more copies are given out than the line orders."""
    seen: set[str] = set()
    for share in shares:
        if share.branch in seen:
            raise InvalidInput(f"branch {share.branch!r} appears more than once")
        seen.add(share.branch)
    total = sum(share.copies for share in shares)
    if total > quantity:
        raise InvalidInput(f"copies add up to {total}, but the line orders {quantity}")


@dataclass(frozen=True)
class Allocation:
    """A line's distribution after its own entries and formulas: what is left unallocated
    and which formula entries did not fit are kept, never dropped."""

    shares: list[Share]
    unallocated: int
    not_applied: list[tuple[str, str, int]]  # (formula, branch, copies)


Formula = tuple[str, Sequence[tuple[str, int]]]  # (name, [(branch, copies), ...])


def allocate(quantity: int, explicit: Sequence[Share], formulas: Sequence[Formula],
             ) -> Allocation:
    """Evergreen's model: the line's own entries first, then each formula's entries in
    order, stacking (a branch named again gets more copies, keeping its first place) until
    the line's copies are given out; entries that no longer fit are reported."""
    check_distribution(quantity, explicit)
    copies: dict[str, int] = {s.branch: s.copies for s in explicit}
    left = quantity - sum(copies.values())
    not_applied: list[tuple[str, str, int]] = []
    for name, entries in formulas:
        for branch, wanted in entries:
            take = min(wanted, left)
            if take > 0:
                copies[branch] = copies.get(branch, 0) + take
                left -= take
            if take < wanted:
                not_applied.append((name, branch, wanted - take))
    return Allocation([Share(b, n) for b, n in copies.items()], left, not_applied)


def check_formula(entries: Sequence[tuple[str, int]]) -> None:
    if not entries:
        raise InvalidInput("a formula needs at least one entry", ("entries",))
    for i, (_, copies) in enumerate(entries):
        if copies < 1:
            raise InvalidInput("copies must be at least 1", ("entries", i, "copies"))


def cancel_copies(shares: Sequence[Share], copies: int) -> list[Share]:
    """Cancel `copies` not yet received, from the last share back: the first branches in
    the distribution keep theirs longest, as they are also filled first."""
    remaining = sum(s.remaining for s in shares)
    if copies < 1:
        raise InvalidInput("copies must be at least 1", ("copies",))
    if copies > remaining:
        raise OverCancel(copies, remaining)
    left = copies
    out = list(shares)
    for i in range(len(out) - 1, -1, -1):
        take = min(left, out[i].remaining)
        out[i] = replace(out[i], cancelled=out[i].cancelled + take)
        left -= take
    return out


class OverCancel(Conflict):
    def __init__(self, asked: int, remaining: int) -> None:
        super().__init__(f"cannot cancel {asked} copies: only {remaining} are still to come "
                         "on this line")


@dataclass(frozen=True)
class LineProgress:
    quantity: int
    received: int
    cancelled: int


def settled_status(lines: Iterable[LineProgress], encumbered: Decimal) -> OrderStatus:
    """Where an opened order stands: open → partially_received → received (every copy
    received or cancelled, money still encumbered for invoices) → closed (nothing left to
    pay); cancelled when every copy was cancelled and none came."""
    lines = list(lines)
    if all(ln.received + ln.cancelled >= ln.quantity for ln in lines):
        if not any(ln.received for ln in lines):
            return "cancelled"
        return "received" if encumbered > 0 else "closed"
    return "partially_received" if any(ln.received for ln in lines) else "open"


def chunks(items: Sequence[T], size: Callable[[T], int], budget: int) -> list[list[T]]:
    """Split `items` in order into runs whose sizes add up to at most `budget` (an item
    bigger than the budget alone gets a run of its own): how a large order stays under
    the backbone's record size as several events."""
    runs: list[list[T]] = [[]]
    used = 0
    for item in items:
        n = size(item)
        if runs[-1] and used + n > budget:
            runs.append([])
            used = 0
        runs[-1].append(item)
        used += n
    return runs if runs[0] else []


def split_copies(quantity: int, branches: Sequence[str]) -> list[Share]:
    """Split `quantity` evenly over `branches`; the first branches take the remainder.

    Branches that would get no copy are left out (a share always has at least one).
    """
    if quantity < 1:
        raise ValueError("quantity must be at least 1")
    if not branches:
        raise ValueError("at least one branch is needed")
    if len(set(branches)) != len(branches):
        raise ValueError("each branch may appear only once")
    each, extra = divmod(quantity, len(branches))
    shares = [Share(b, each + (1 if i < extra else 0)) for i, b in enumerate(branches)]
    return [s for s in shares if s.copies > 0]


# --- receiving ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedCopy:
    copy_id: str
    owning_branch: str


@dataclass(frozen=True)
class Receipt:
    copies: list[ReceivedCopy]
    shares: list[Share]  # the line's shares after this receipt, in distribution order


def new_copy_id() -> str:
    return str(uuid.uuid4())


def receive(shares: Sequence[Share], quantity: int,
            copy_id: Callable[[], str] = new_copy_id) -> Receipt:
    """Allocate `quantity` arrived copies to branches in distribution order.

    Each branch's share is filled before the next one gets a copy, so a line can be
    received in several partial deliveries; never more than was ordered.
    """
    if quantity < 1:
        raise InvalidInput("quantity must be at least 1", ("quantity",))
    remaining = sum(s.remaining for s in shares)
    if quantity > remaining:
        raise OverReceipt(quantity, remaining)
    left = quantity
    copies: list[ReceivedCopy] = []
    updated: list[Share] = []
    for share in shares:
        take = min(left, share.remaining)
        copies.extend(ReceivedCopy(copy_id(), share.branch) for _ in range(take))
        updated.append(replace(share, received=share.received + take))
        left -= take
    return Receipt(copies, updated)


# --- identifiers ----------------------------------------------------------------------------


def isbn_checks_out(given: str) -> bool:
    clean = str(isbnlib.canonical(given))
    return bool(isbnlib.is_isbn13(clean) or isbnlib.is_isbn10(clean))


def normalise_isbn(given: str) -> str:
    """ISBN-13 of a valid ISBN-10 or ISBN-13 in any punctuation; anything else as given.

    A number that does not check out is kept, not refused: the vendor's number is what
    the copies will carry, and cataloging reconciles it with the record it matches.
    """
    clean = str(isbnlib.canonical(given))
    if isbnlib.is_isbn13(clean):
        return clean
    if isbnlib.is_isbn10(clean):
        return str(isbnlib.to_isbn13(clean))
    return given.strip()
