"""Circulation's rules, free of I/O: where an item should be after what happened at a shelf.

Circulation is the single authority on where an item should be. Branch events are facts
(the book already left the shelf), so these rules never refuse one; they reconcile and
say what to record.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
    #: The hold this copy now serves: on the shelf here (`hold_shelf`) or on its way.
    hold_id: str | None = None


@dataclass(frozen=True)
class WaitingHold:
    """The first hold in line for this copy's title, and where its reader collects it."""

    hold_id: str
    pickup_branch: str


def decide_checkin(
    *,
    branch: str,
    owning_branch: str,
    open_transfer: OpenTransfer | None,
    floating_group_here: str | None = None,
    floating_group_owner: str | None = None,
    hold_here: WaitingHold | None = None,
    hold_elsewhere: WaitingHold | None = None,
    transfer_hold: WaitingHold | None = None,
) -> CheckinDecision:
    """The check-in decision (docs/architecture.md), in order.

    An open transfer first: at its destination it completes (on the hold shelf when it
    carried the copy to a hold, `transfer_hold`); anywhere else it is re-routed from here
    to the same destination, so there is never more than one. Then: (1) a hold waiting
    here for this title → hold shelf; (2) a hold elsewhere this copy should fill →
    transfer to its pickup branch; (3) at the owning branch → reshelve; (4) this branch
    and the owner share a floating group → the item stays here; (5) otherwise → home.
    """
    if open_transfer is not None:
        if open_transfer.to_site == branch:
            if transfer_hold is not None:
                return CheckinDecision("hold_shelf", "on_hold_shelf", branch,
                                       complete_transfer=open_transfer.transfer_id,
                                       hold_id=transfer_hold.hold_id)
            return CheckinDecision("reshelve", "available", branch,
                                   complete_transfer=open_transfer.transfer_id)
        # Turned up somewhere else on its way: re-route from here to the same destination.
        if transfer_hold is not None:
            return CheckinDecision("transfer", "in_transit", branch,
                                   cancel_transfer=open_transfer.transfer_id,
                                   transfer_to=open_transfer.to_site, reason="hold",
                                   hold_id=transfer_hold.hold_id)
        return CheckinDecision(
            "transfer", "in_transit", branch,
            cancel_transfer=open_transfer.transfer_id,
            transfer_to=open_transfer.to_site,
            reason="return_home" if open_transfer.to_site == owning_branch else "rebalance",
        )
    if hold_here is not None:
        return CheckinDecision("hold_shelf", "on_hold_shelf", branch, hold_id=hold_here.hold_id)
    if hold_elsewhere is not None and hold_elsewhere.pickup_branch != branch:
        return CheckinDecision("transfer", "in_transit", branch,
                               transfer_to=hold_elsewhere.pickup_branch, reason="hold",
                               hold_id=hold_elsewhere.hold_id)
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


# --- holds ----------------------------------------------------------------------------------

#: A hold's life: waiting for a copy → in transit with one → ready on the hold shelf →
#: closed (fulfilled, cancelled, expired).
ACTIVE_HOLD_STATUSES = ("waiting", "in_transit", "ready")


@dataclass(frozen=True)
class Candidate:
    """An available copy that could fill a hold, where it is."""

    barcode: str
    site: str


@dataclass(frozen=True)
class NetworkSite:
    """What circulation keeps of a site to price moving a copy (from `network.sites`)."""

    code: str
    hub: str | None
    lat: float | None
    lon: float | None


def move_cost(origin: NetworkSite | None, pickup: NetworkSite | None,
              on_a_route: bool) -> tuple[int, float]:
    """What moving a copy from `origin` to `pickup` costs, as a sortable key.

    (0, km) a planned route of the next courier days visits the origin and then the
    pickup: the copy rides along at once; (1, km) both are served by the same hub: one
    night at the hub; (2, km) another hub: two legs; km is the great-circle distance,
    the tie-break (and the only measure when coordinates are unknown: 0).
    """
    km = 0.0
    if origin and pickup and None not in (origin.lat, origin.lon, pickup.lat, pickup.lon):
        km = _haversine_km(origin.lat or 0.0, origin.lon or 0.0, pickup.lat or 0.0,
                           pickup.lon or 0.0)
    if on_a_route:
        return 0, km
    if origin and pickup and origin.hub and origin.hub == pickup.hub:
        return 1, km
    return 2, km


def _haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(a)))


def choose_copy(pickup: str, candidates: list[Candidate],
                cost: Callable[[str, str], tuple[int, float]]) -> Candidate | None:
    """The copy to fill a hold: one on the shelf at the pickup branch first, else the one
    cheapest to move there (ties by barcode, so the choice is stable)."""
    if not candidates:
        return None
    here = sorted((c for c in candidates if c.site == pickup), key=lambda c: c.barcode)
    if here:
        return here[0]
    return min(candidates, key=lambda c: (cost(c.site, pickup), c.barcode))


def hold_expires_on(ready_on: date, shelf_days: int) -> date:
    """The last day a reader may collect a hold put on the shelf on `ready_on`."""
    return ready_on + timedelta(days=shelf_days)


# --- loan policies --------------------------------------------------------------------------


@dataclass(frozen=True)
class LoanPolicy:
    """How long, how often renewed, and how many at once: for a site (its code), a group
    of sites (a floating group), or everywhere (`*`); for one item type or all (`*`)."""

    scope: str
    item_type: str
    loan_days: int
    renewals: int
    max_items: int


def choose_policy(policies: list[LoanPolicy], *, site: str, group: str | None,
                  item_type: str | None, default: LoanPolicy) -> LoanPolicy:
    """The most specific policy that applies: a site's own beats its group's beats `*`;
    within that, the item's type beats `*`. None applies: the network's default."""
    def rank(p: LoanPolicy) -> tuple[int, int] | None:
        scope = 2 if p.scope == site else 1 if group and p.scope == group else (
            0 if p.scope == "*" else None)
        kind = 1 if item_type and p.item_type == item_type else 0 if p.item_type == "*" else None
        return None if scope is None or kind is None else (scope, kind)

    ranked = [(r, p) for p in policies if (r := rank(p)) is not None]
    return max(ranked, key=lambda rp: rp[0])[1] if ranked else default
