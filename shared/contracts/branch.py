"""Events branch systems (desks, self-check machines, study rooms) publish on branch.events.

Branch facts already happened at the shelf; circulation never refuses one, it reconciles.
"""

from __future__ import annotations

from datetime import date

from pydantic import Field, model_validator

from shared.contracts.registry import BRANCH_EVENTS, Event, event

Code = str  # site codes like JX-HN-01


class BranchEvent(Event):
    """Every branch event names the branch that speaks; the envelope's source must match."""

    branch: Code

    def subject_field(self) -> tuple[str, str] | None:
        """The `data` field the envelope's subject (the Kafka key) must equal, and its value.

        The item's barcode, or the patron for hold events: one item's (one patron's) events
        share a key, so a partition, so an order.
        """
        for name in ("barcode", "patron"):
            value = getattr(self, name, None)
            if isinstance(value, str):
                return name, value
        return None


@event("branch.checkout", topic=BRANCH_EVENTS)
class BranchCheckout(BranchEvent):
    barcode: str = Field(min_length=1)
    patron: str = Field(min_length=1)
    due: date | None = None
    #: On a book van (`branch` is the van's site): the stop it stood at.
    stop: Code | None = None


@event("branch.checkin", topic=BRANCH_EVENTS)
class BranchCheckin(BranchEvent):
    barcode: str = Field(min_length=1)
    stop: Code | None = None


@event("branch.renewal", topic=BRANCH_EVENTS)
class BranchRenewal(BranchEvent):
    barcode: str = Field(min_length=1)
    patron: str = Field(min_length=1)
    due: date | None = None


@event("branch.hold_requested", topic=BRANCH_EVENTS)
class BranchHoldRequested(BranchEvent):
    patron: str = Field(min_length=1)
    isbn: str | None = None
    bib_id: str | None = None
    hold_id: str | None = None

    @model_validator(mode="after")
    def _title_given(self) -> BranchHoldRequested:
        if not self.isbn and not self.bib_id:
            raise ValueError("one of isbn or bib_id is required")
        return self


@event("branch.hold_cancelled", topic=BRANCH_EVENTS)
class BranchHoldCancelled(BranchEvent):
    patron: str
    hold_id: str


@event("branch.item_missing", topic=BRANCH_EVENTS)
class BranchItemMissing(BranchEvent):
    barcode: str = Field(min_length=1)
