"""Events logistics publishes: the network's sites, shipments and routes."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field

from shared.contracts.registry import (
    LOGISTICS_ROUTES,
    LOGISTICS_SHIPMENTS,
    NETWORK_SITES,
    Event,
    Part,
    event,
)

Code = str
SiteKind = Literal["hub", "central", "county", "town", "village", "smart_room", "bookmobile_stop"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@event("network.site_upserted", topic=NETWORK_SITES)
class SiteUpserted(Event):
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


@event("logistics.shipment_created", topic=LOGISTICS_SHIPMENTS)
class ShipmentCreated(Event):
    shipment_id: str
    transfer_id: str
    barcode: str
    from_site: Code
    to_site: Code


@event("logistics.shipment_picked_up", topic=LOGISTICS_SHIPMENTS)
class ShipmentPickedUp(Event):
    shipment_id: str
    transfer_id: str
    barcode: str
    site: Code
    route_id: str
    crate_id: str | None = None


@event("logistics.shipment_arrived", topic=LOGISTICS_SHIPMENTS)
class ShipmentArrived(Event):
    shipment_id: str
    transfer_id: str
    barcode: str
    site: Code


@event("logistics.shipment_delivered", topic=LOGISTICS_SHIPMENTS)
class ShipmentDelivered(Event):
    shipment_id: str
    transfer_id: str
    barcode: str
    site: Code


@event("logistics.shipment_exception", topic=LOGISTICS_SHIPMENTS, reserved=True)
class ShipmentException(Event):
    shipment_id: str
    transfer_id: str
    barcode: str
    kind: Literal["missing", "damaged", "misrouted", "refused"]
    site: Code
    note: str | None = None


@event("logistics.shipment_cancelled", topic=LOGISTICS_SHIPMENTS)
class ShipmentCancelled(Event):
    shipment_id: str
    transfer_id: str
    barcode: str


class RouteStop(Part):
    seq: int
    site: Code
    eta: str
    deliveries: int
    pickups: int


@event("logistics.route_planned", topic=LOGISTICS_ROUTES, reserved=True)
class RoutePlanned(Event):
    route_id: str
    date: date
    vehicle: str
    driver: str | None = None
    depot: Code
    stops: list[RouteStop]
    distance_km: float
    duration_min: float


@event("logistics.route_completed", topic=LOGISTICS_ROUTES, reserved=True)
class RouteCompleted(Event):
    route_id: str
    date: date
    completed_stops: int
    exceptions: int
