"""Acquisition's rules, free of I/O: order totals, distributions, fund checks, receiving.

The acquisition center buys for the whole network: each order line's copies are split
across owning branches (a distribution), the order encumbers its fund when opened, and
copies are received against the distribution in order, possibly over several deliveries.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Literal

import isbnlib

from shared.errors import Conflict, Invalid, NotFound

__all__ = ["Conflict", "InvalidInput", "NotFound"]

OrderStatus = Literal["pending", "open", "closed", "cancelled"]

#: Which statuses an order may move to from each status.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"open", "cancelled"}),
    "open": frozenset({"closed", "cancelled"}),
    "closed": frozenset(),
    "cancelled": frozenset(),
}


class InvalidInput(Invalid):
    """The request names something that does not fit (a bad distribution, an unknown fund).

    `path` is the offending field as a path (`("lines", 0, "distribution")`).
    """

    def __init__(self, message: str, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(message, field=".".join(str(p) for p in path), kind="value_error")
        self.path = path


class OverBudget(Conflict):
    def __init__(self, shortfall: Decimal, amount: Decimal, available: Decimal,
                 currency: str) -> None:
        super().__init__(
            f"order total {amount} {currency} exceeds the fund's available {available} "
            f"{currency} by {shortfall} {currency}"
        )
        self.shortfall = shortfall


class OverReceipt(Conflict):
    def __init__(self, asked: int, remaining: int) -> None:
        super().__init__(f"cannot receive {asked} copies: only {remaining} remain on this line")
        self.asked = asked
        self.remaining = remaining


class WrongStatus(Conflict):
    def __init__(self, status: str, wanted: str) -> None:
        super().__init__(f"the order is {status}; it cannot become {wanted}")
        self.status = status


def transition(status: str, to: str) -> str:
    """Move an order along pending → open → closed / cancelled, or refuse."""
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
    """A fund's money: what it may spend, what open orders have promised, what was paid."""

    budget: Decimal
    encumbered: Decimal
    spent: Decimal
    currency: str

    @property
    def available(self) -> Decimal:
        return self.budget - self.encumbered - self.spent

    def encumber(self, amount: Decimal) -> FundBalance:
        """Promise `amount` to an order being opened; refuse to go past the budget."""
        if amount > self.available:
            raise OverBudget(amount - self.available, amount, self.available, self.currency)
        return replace(self, encumbered=self.encumbered + amount)

    def spend(self, amount: Decimal) -> FundBalance:
        """Received copies turn their share of the encumbrance into spending."""
        return replace(self, encumbered=self.encumbered - amount, spent=self.spent + amount)

    def release(self, amount: Decimal) -> FundBalance:
        """Copies that will never come give their encumbrance back."""
        return replace(self, encumbered=self.encumbered - amount)


# --- distribution ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """One branch's part of an order line: how many copies it gets, how many arrived."""

    branch: str
    copies: int
    received: int = 0

    @property
    def remaining(self) -> int:
        return self.copies - self.received


def check_distribution(quantity: int, shares: Sequence[Share]) -> None:
    """Every ordered copy has exactly one owning branch, and each branch appears once."""
    seen: set[str] = set()
    for share in shares:
        if share.branch in seen:
            raise InvalidInput(f"branch {share.branch!r} appears more than once")
        seen.add(share.branch)
    total = sum(share.copies for share in shares)
    if total != quantity:
        raise InvalidInput(f"copies add up to {total}, but the line orders {quantity}")


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


def fully_received(shares: Iterable[Share]) -> bool:
    return all(s.remaining == 0 for s in shares)


# --- identifiers ----------------------------------------------------------------------------


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
