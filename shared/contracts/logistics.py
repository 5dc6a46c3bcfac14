"""Events logistics publishes: the network's sites, shipments and routes."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import Field

from shared.contracts.registry import (
    LOGISTICS_ROUTES,
    LOGISTICS_SHIPMENTS,
    NETWORK_FLEET,
    NETWORK_SITES,
    Event,
    Part,
    event,
)

Code = str
SiteKind = Literal["hub", "central", "county", "town", "village", "smart_room", "book_van",
                   "bookmobile_stop"]
VehicleKind = Literal["van", "book_van"]
HHMM = str  # a time of day, "HH:MM"
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
    address: str | None = None
    service_minutes: int = Field(default=10, ge=0, le=240)


class BookVanStop(Part):
    site: Code
    arrive: HHMM
    depart: HHMM


class BookVanDay(Part):
    day: Weekday
    week: int | None = Field(default=None, ge=1, le=5)
    stops: list[BookVanStop]


@event("network.vehicle_upserted", topic=NETWORK_FLEET)
class VehicleUpserted(Event):
    vehicle_id: str
    name: str
    kind: VehicleKind
    depot: Code
    capacity_crates: int = Field(ge=1)
    shift_start: HHMM
    shift_end: HHMM
    days: list[Weekday]
    site: Code | None = None
    timetable: list[BookVanDay] = Field(default_factory=list)
    active: bool = True


@event("network.driver_upserted", topic=NETWORK_FLEET)
class DriverUpserted(Event):
    driver_id: str
    name: str
    vehicle: str | None = None
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


@event("logistics.shipment_exception", topic=LOGISTICS_SHIPMENTS)
class ShipmentException(Event):
    shipment_id: str
    transfer_id: str
    barcode: str
    kind: Literal["missing", "damaged", "misrouted", "refused"]
    site: Code
    note: str | None = None
    exception_id: str | None = None
    route_id: str | None = None
    crate_id: str | None = None


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
    arrival: datetime | None = None
    departure: datetime | None = None


@event("logistics.route_planned", topic=LOGISTICS_ROUTES)
class RoutePlanned(Event):
    route_id: str
    date: date
    vehicle: str
    driver: str | None = None
    depot: Code
    stops: list[RouteStop]
    distance_km: float
    duration_min: float
    plan_id: str | None = None
    revision: int = Field(default=1, ge=1)
    start: datetime | None = None
    end: datetime | None = None


@event("logistics.route_completed", topic=LOGISTICS_ROUTES)
class RouteCompleted(Event):
    route_id: str
    date: date
    completed_stops: int
    exceptions: int
    vehicle: str | None = None
    driver: str | None = None
    unserved_stops: int = 0
