"""Circulation's rules, free of I/O: where an item should be after what happened at a shelf.

Circulation is the single authority on where an item should be. Branch events are facts
(the book already left the shelf), so these rules never refuse one; they reconcile and
say what to record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import cast, get_args

from shared.contracts.circulation import Disposition, ItemStatus, TransferReason

__all__ = ["Disposition", "ItemStatus", "TransferReason"]

DEFAULT_LOAN_DAYS = 30


@dataclass(frozen=True)
class OpenTransfer:
    transfer_id: str
    to_site: str


@dataclass(frozen=True)
class CheckinDecision:
    """What a check-in means for the item.

    `complete_transfer`: the open transfer ends here (this is its destination).
    `cancel_transfer`: the open transfer is abandoned (the item turned up elsewhere).
    `transfer_to`/`reason`: a new transfer to request from this branch.
    """

    disposition: Disposition
    status: ItemStatus
    site: str
    complete_transfer: str | None = None
    cancel_transfer: str | None = None
    transfer_to: str | None = None
    reason: TransferReason | None = None


def decide_checkin(
    *,
    branch: str,
    owning_branch: str,
    open_transfer: OpenTransfer | None,
    floating_group_here: str | None = None,
    floating_group_owner: str | None = None,
) -> CheckinDecision:
    """The check-in decision (docs/architecture.md), in order (holds join in a later release).

    (3) at the owning branch → reshelve; (4) this branch and the owner share a floating
    group → the item stays here; (5) otherwise → transfer home. An open transfer is
    completed when the item is checked in at its destination and re-routed from here
    when it is checked in anywhere else, so there is never more than one.
    """
    if open_transfer is not None:
        if open_transfer.to_site == branch:
            return CheckinDecision("reshelve", "available", branch,
                                   complete_transfer=open_transfer.transfer_id)
        # Turned up somewhere else on its way: re-route from here to the same destination.
        return CheckinDecision(
            "transfer", "in_transit", branch,
            cancel_transfer=open_transfer.transfer_id,
            transfer_to=open_transfer.to_site,
            reason="return_home" if open_transfer.to_site == owning_branch else "rebalance",
        )
    if branch == owning_branch:
        return CheckinDecision("reshelve", "available", branch)
    if floating_group_here and floating_group_here == floating_group_owner:
        return CheckinDecision("float", "available", branch)
    return CheckinDecision("transfer", "in_transit", branch, transfer_to=owning_branch,
                           reason="return_home")


def item_status(value: str) -> ItemStatus:
    """A stored status as the contract's type; a value outside it is a bug, not input."""
    if value not in get_args(ItemStatus):
        raise ValueError(f"unknown item status {value!r}")
    return cast(ItemStatus, value)


def placement_of_new_item(*, site: str, owning_branch: str) -> tuple[ItemStatus, str | None]:
    """A newly catalogued item waits in processing until it is shipped to its owner."""
    if site == owning_branch:
        return "available", None
    return "in_transit", owning_branch


#: The years a loan may start in; a due date is computed only for these (HTTP refuses
#: others with 422; on the topic such an event is dead-lettered as a handler error).
EARLIEST_LOAN_YEAR, LATEST_LOAN_YEAR = 1900, 2200


class LoanDateOutOfRange(ValueError):
    """A check-out or renewal dated outside the years a due date is computed for."""


def due_date(checked_out_on: date, given: date | None, days: int = DEFAULT_LOAN_DAYS) -> date:
    """The branch's due date wins; otherwise the network's default loan period.

    A loan starting outside `EARLIEST_LOAN_YEAR..LATEST_LOAN_YEAR` is refused (raises
    `LoanDateOutOfRange`) rather than overflowing the date arithmetic near year 9999.
    """
    if not EARLIEST_LOAN_YEAR <= checked_out_on.year <= LATEST_LOAN_YEAR:
        raise LoanDateOutOfRange(
            f"time: a loan starting on {checked_out_on.isoformat()} is outside the years "
            f"{EARLIEST_LOAN_YEAR}..{LATEST_LOAN_YEAR}; no due date is computed for it"
        )
    return given or checked_out_on + timedelta(days=days)
