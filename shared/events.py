"""The published interface: CloudEvents envelope, topics, and one pydantic model per event type.

Consumers are tolerant readers (unknown fields are ignored); a record that does not match
its type's model is rejected with the path of each bad field, so the dead-letter reason
and the HTTP 4xx say exactly what to fix.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

CONTENT_TYPE = "application/cloudevents+json"


class Payload(BaseModel):
    """Base of every event's `data`: tolerant of fields added later."""

    model_config = ConfigDict(extra="ignore", frozen=True)


Code = str  # site codes like JX-CENTRAL
Money = Decimal


# --- branch systems -> branch.events ------------------------------------------------------


class BranchCheckout(Payload):
    branch: Code
    barcode: str = Field(min_length=1)
    patron: str = Field(min_length=1)
    due: date | None = None


class BranchCheckin(Payload):
    branch: Code
    barcode: str = Field(min_length=1)


class BranchRenewal(Payload):
    branch: Code
    barcode: str = Field(min_length=1)
    patron: str = Field(min_length=1)
    due: date | None = None


class BranchHoldRequested(Payload):
    branch: Code
    patron: str = Field(min_length=1)
    isbn: str | None = None
    bib_id: str | None = None
    hold_id: str | None = None

    @model_validator(mode="after")
    def _title_given(self) -> BranchHoldRequested:
        if not self.isbn and not self.bib_id:
            raise ValueError("one of isbn or bib_id is required")
        return self


class BranchHoldCancelled(Payload):
    branch: Code
    patron: str
    hold_id: str


class BranchItemMissing(Payload):
    branch: Code
    barcode: str = Field(min_length=1)


# --- acquisition ----------------------------------------------------------------------------


class Distribution(Payload):
    branch: Code
    copies: int = Field(ge=1)


class OrderLineData(Payload):
    line_id: str
    isbn: str
    title: str
    author: str | None = None
    publisher: str | None = None
    year: int | None = None
    unit_price: Money
    quantity: int = Field(ge=1)
    distribution: list[Distribution]


class OrderOpened(Payload):
    order_id: str
    vendor_id: str
    fund_code: str
    currency: str
    lines: list[OrderLineData]


class ReceivedCopy(Payload):
    copy_id: str
    owning_branch: Code


class CopiesReceived(Payload):
    order_id: str
    line_id: str
    isbn: str
    title: str
    author: str | None = None
    publisher: str | None = None
    year: int | None = None
    copies: list[ReceivedCopy]
    received_at: AwareDatetime


class OrderCancelled(Payload):
    order_id: str
    line_ids: list[str]
    reason: str


class OrderClosed(Payload):
    order_id: str


# --- cataloging -----------------------------------------------------------------------------


class BibUpserted(Payload):
    bib_id: str
    isbns: list[str]
    title: str
    author: str | None = None
    publisher: str | None = None
    year: int | None = None
    language: str | None = None
    classification: str | None = None
    subjects: list[str] | None = None


class ItemCataloged(Payload):
    barcode: str
    bib_id: str
    isbn: str | None = None
    title: str
    call_number: str
    owning_branch: Code
    copy_id: str | None = None
    site: Code


class ItemWithdrawn(Payload):
    barcode: str
    reason: str


# --- circulation ----------------------------------------------------------------------------

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


class ItemCheckedOut(Payload):
    barcode: str
    branch: Code
    patron: str
    loan_id: str
    due: date


class ItemCheckedIn(Payload):
    barcode: str
    branch: Code
    loan_id: str | None = None
    disposition: Disposition


class ItemStatusChanged(Payload):
    barcode: str
    bib_id: str
    status: ItemStatus
    site: Code
    owning_branch: Code


class HoldPlaced(Payload):
    hold_id: str
    patron: str
    bib_id: str
    pickup_branch: Code


class HoldReady(Payload):
    hold_id: str
    barcode: str
    pickup_branch: Code
    expires_on: date


class HoldClosed(Payload):
    hold_id: str
    outcome: Literal["fulfilled", "cancelled", "expired"]


class TransferRequested(Payload):
    transfer_id: str
    barcode: str
    from_site: Code
    to_site: Code
    reason: TransferReason
    hold_id: str | None = None
    requested_at: AwareDatetime


class TransferCancelled(Payload):
    transfer_id: str
    barcode: str
    reason: str


class TransferCompleted(Payload):
    transfer_id: str
    barcode: str
    site: Code


# --- logistics ------------------------------------------------------------------------------

SiteKind = Literal["hub", "central", "county", "town", "village", "smart_room", "bookmobile_stop"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class SiteUpserted(Payload):
    code: Code
    name: str
    kind: SiteKind
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    hub: Code
    opening_hours: dict[Weekday, list[tuple[str, str]]]
    courier_days: list[Weekday]
    floating_group: str | None = None
    active: bool = True


class ShipmentCreated(Payload):
    shipment_id: str
    transfer_id: str
    barcode: str
    from_site: Code
    to_site: Code


class ShipmentPickedUp(Payload):
    shipment_id: str
    transfer_id: str
    barcode: str
    site: Code
    route_id: str
    crate_id: str | None = None


class ShipmentArrived(Payload):
    shipment_id: str
    transfer_id: str
    barcode: str
    site: Code


class ShipmentDelivered(Payload):
    shipment_id: str
    transfer_id: str
    barcode: str
    site: Code


class ShipmentException(Payload):
    shipment_id: str
    transfer_id: str
    barcode: str
    kind: Literal["missing", "damaged", "misrouted", "refused"]
    site: Code
    note: str | None = None


class ShipmentCancelled(Payload):
    shipment_id: str
    transfer_id: str
    barcode: str


class RouteStop(Payload):
    seq: int
    site: Code
    eta: str
    deliveries: int
    pickups: int


class RoutePlanned(Payload):
    route_id: str
    date: date
    vehicle: str
    driver: str | None = None
    depot: Code
    stops: list[RouteStop]
    distance_km: float
    duration_min: float


class RouteCompleted(Payload):
    route_id: str
    date: date
    completed_stops: int
    exceptions: int


# --- registry -------------------------------------------------------------------------------

BRANCH_EVENTS = "branch.events"

#: type -> (topic, data model). The single source of truth for routing and validation.
EVENT_TYPES: dict[str, tuple[str, type[Payload]]] = {
    "branch.checkout": (BRANCH_EVENTS, BranchCheckout),
    "branch.checkin": (BRANCH_EVENTS, BranchCheckin),
    "branch.renewal": (BRANCH_EVENTS, BranchRenewal),
    "branch.hold_requested": (BRANCH_EVENTS, BranchHoldRequested),
    "branch.hold_cancelled": (BRANCH_EVENTS, BranchHoldCancelled),
    "branch.item_missing": (BRANCH_EVENTS, BranchItemMissing),
    "acquisition.order_opened": ("acquisition.orders", OrderOpened),
    "acquisition.copies_received": ("acquisition.orders", CopiesReceived),
    "acquisition.order_cancelled": ("acquisition.orders", OrderCancelled),
    "acquisition.order_closed": ("acquisition.orders", OrderClosed),
    "cataloging.bib_upserted": ("cataloging.bibs", BibUpserted),
    "cataloging.item_cataloged": ("cataloging.items", ItemCataloged),
    "cataloging.item_withdrawn": ("cataloging.items", ItemWithdrawn),
    "circulation.item_checked_out": ("circulation.loans", ItemCheckedOut),
    "circulation.item_checked_in": ("circulation.loans", ItemCheckedIn),
    "circulation.item_status_changed": ("circulation.loans", ItemStatusChanged),
    "circulation.hold_placed": ("circulation.holds", HoldPlaced),
    "circulation.hold_ready": ("circulation.holds", HoldReady),
    "circulation.hold_closed": ("circulation.holds", HoldClosed),
    "circulation.transfer_requested": ("circulation.transfers", TransferRequested),
    "circulation.transfer_cancelled": ("circulation.transfers", TransferCancelled),
    "circulation.transfer_completed": ("circulation.transfers", TransferCompleted),
    "network.site_upserted": ("network.sites", SiteUpserted),
    "logistics.shipment_created": ("logistics.shipments", ShipmentCreated),
    "logistics.shipment_picked_up": ("logistics.shipments", ShipmentPickedUp),
    "logistics.shipment_arrived": ("logistics.shipments", ShipmentArrived),
    "logistics.shipment_delivered": ("logistics.shipments", ShipmentDelivered),
    "logistics.shipment_exception": ("logistics.shipments", ShipmentException),
    "logistics.shipment_cancelled": ("logistics.shipments", ShipmentCancelled),
    "logistics.route_planned": ("logistics.routes", RoutePlanned),
    "logistics.route_completed": ("logistics.routes", RouteCompleted),
}

SERVICES = ("acquisition", "cataloging", "circulation", "logistics")

#: Every topic of the contract, dead-letter topics included; created explicitly at start-up.
TOPICS: tuple[str, ...] = tuple(
    sorted({topic for topic, _ in EVENT_TYPES.values()} | {f"dlq.{s}" for s in SERVICES})
)


def topic_of(event_type: str) -> str:
    return EVENT_TYPES[event_type][0]


class Envelope(BaseModel):
    """A CloudEvents 1.0 structured-mode event; `data` stays a dict until typed by `payload`."""

    model_config = ConfigDict(extra="ignore")

    specversion: Literal["1.0"]
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    time: AwareDatetime
    subject: str = Field(min_length=1)
    datacontenttype: str | None = "application/json"
    schemaversion: int = 1
    correlationid: str | None = None
    causationid: str | None = None
    data: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        """The de-duplication key of CONTRACTS.md."""
        return (self.source, self.id)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class InvalidEvent(ValueError):
    """A record that can never be handled: it goes to the dead-letter topic, not a retry."""

    def __init__(self, reason: str, error_type: str, fields: list[str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type
        self.fields = fields or []


def _describe(exc: ValidationError, prefix: str = "") -> tuple[str, list[str]]:
    fields: list[str] = []
    parts: list[str] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        name = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "body"
        fields.append(name)
        parts.append(f"{name}: {err['msg']}")
    return "; ".join(parts), fields


def parse_envelope(obj: Any) -> Envelope:
    try:
        return Envelope.model_validate(obj)
    except ValidationError as exc:
        reason, fields = _describe(exc)
        raise InvalidEvent(reason, "invalid_envelope", fields) from exc


def payload_of(envelope: Envelope) -> Payload:
    """Validate `data` against the model registered for `type`."""
    entry = EVENT_TYPES.get(envelope.type)
    if entry is None:
        raise InvalidEvent(f"type: unknown event type {envelope.type!r}", "unknown_type", ["type"])
    try:
        payload = entry[1].model_validate(envelope.data)
    except ValidationError as exc:
        reason, fields = _describe(exc, "data.")
        raise InvalidEvent(reason, "invalid_data", fields) from exc
    if envelope.type.startswith("branch."):
        branch = getattr(payload, "branch", None)
        if envelope.source != f"branch/{branch}":
            raise InvalidEvent(
                f"source: must be 'branch/{branch}' for an event of branch {branch!r}",
                "invalid_source",
                ["source"],
            )
    return payload


def parse_obj(obj: Any) -> tuple[Envelope, Payload]:
    envelope = parse_envelope(obj)
    return envelope, payload_of(envelope)


def parse_bytes(raw: bytes | None) -> tuple[Envelope, Payload]:
    """Parse one Kafka record value; raise InvalidEvent saying why it can't be handled."""
    return parse_obj(decode_json(raw))


def decode_json(raw: bytes | None) -> dict[str, Any]:
    """The record value as a JSON object, or InvalidEvent("not_json")."""
    if raw is None:
        raise InvalidEvent("value: empty record (tombstone)", "not_json")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"value: not JSON ({exc})", "not_json") from exc
    if not isinstance(obj, dict):
        raise InvalidEvent("value: a JSON object is required", "not_json")
    return obj


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_event(
    event_type: str,
    subject: str,
    data: Payload,
    *,
    source: str,
    cause: Envelope | None = None,
    time: datetime | None = None,
    event_id: str | None = None,
) -> Envelope:
    """Build an outgoing event; `cause` carries the correlation chain forward."""
    expected = EVENT_TYPES[event_type][1]
    if not isinstance(data, expected):
        raise TypeError(f"{event_type} carries {expected.__name__}, not {type(data).__name__}")
    correlation = None
    if cause is not None:
        correlation = cause.correlationid or cause.id
    # Built from already-validated parts, so construct without validating a second time:
    # this runs for every event a service emits.
    return Envelope.model_construct(
        specversion="1.0",
        id=event_id or new_id(),
        source=source,
        type=event_type,
        time=time or utcnow(),
        subject=subject,
        datacontenttype="application/json",
        schemaversion=1,
        correlationid=correlation,
        causationid=cause.id if cause is not None else None,
        data=data.model_dump(mode="json", exclude_none=True),
    )
