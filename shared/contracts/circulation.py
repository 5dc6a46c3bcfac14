"""Events circulation publishes: loans, holds, and the transfers that move items."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import AwareDatetime

from shared.contracts.registry import (
    CIRCULATION_HOLDS,
    CIRCULATION_LOANS,
    CIRCULATION_TRANSFERS,
    Event,
    event,
)

Code = str
Disposition = Literal["reshelve", "hold_shelf", "transfer", "float"]
ItemStatus = Literal[
    "on_order",
    "in_processing",
    "in_transit",
    "available",
    "on_loan",
    "on_hold_shelf",
    "missing",
    "lost",
    "withdrawn",
]
TransferReason = Literal["return_home", "hold", "new_item", "rebalance"]


@event("circulation.item_checked_out", topic=CIRCULATION_LOANS)
class ItemCheckedOut(Event):
    barcode: str
    branch: Code
    patron: str
    loan_id: str
    due: date


@event("circulation.item_checked_in", topic=CIRCULATION_LOANS)
class ItemCheckedIn(Event):
    barcode: str
    branch: Code
    loan_id: str | None = None
    disposition: Disposition


@event("circulation.item_status_changed", topic=CIRCULATION_LOANS)
class ItemStatusChanged(Event):
    barcode: str
    bib_id: str
    status: ItemStatus
    site: Code
    owning_branch: Code


@event("circulation.hold_placed", topic=CIRCULATION_HOLDS)
class HoldPlaced(Event):
    hold_id: str
    patron: str
    bib_id: str
    pickup_branch: Code


@event("circulation.hold_ready", topic=CIRCULATION_HOLDS)
class HoldReady(Event):
    hold_id: str
    barcode: str
    pickup_branch: Code
    expires_on: date


@event("circulation.hold_closed", topic=CIRCULATION_HOLDS)
class HoldClosed(Event):
    hold_id: str
    outcome: Literal["fulfilled", "cancelled", "expired"]


@event("circulation.transfer_requested", topic=CIRCULATION_TRANSFERS)
class TransferRequested(Event):
    transfer_id: str
    barcode: str
    from_site: Code
    to_site: Code
    reason: TransferReason
    hold_id: str | None = None
    requested_at: AwareDatetime


@event("circulation.transfer_cancelled", topic=CIRCULATION_TRANSFERS)
class TransferCancelled(Event):
    transfer_id: str
    barcode: str
    reason: str


@event("circulation.transfer_late", topic=CIRCULATION_TRANSFERS)
class TransferLate(Event):
    transfer_id: str
    barcode: str
    from_site: Code
    to_site: Code
    requested_at: AwareDatetime
    age_days: float


@event("circulation.transfer_completed", topic=CIRCULATION_TRANSFERS)
class TransferCompleted(Event):
    transfer_id: str
    barcode: str
    site: Code
