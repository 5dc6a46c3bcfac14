"""Logistics' tables (schema `logistics`): the network, shipments, crates, routes, scans."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Index, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field

from shared.service.rows import Row

SCHEMA = "logistics"


def _ts(nullable: bool = True) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable)


def _json() -> Column[Any]:
    return Column(JSONB, nullable=False)


class Site(Row, table=True):
    """A place the delivery service calls at: the hub, the central library, a branch."""

    __table_args__ = {"schema": SCHEMA}

    code: str = Field(primary_key=True)
    name: str
    kind: str
    lat: float
    lon: float
    hub: str
    opening_hours: dict[str, Any] = Field(sa_column=_json())
    courier_days: list[str] = Field(sa_column=_json())
    floating_group: str | None = None
    active: bool = True
    address: str | None = None
    service_minutes: int = 10
    updated_at: datetime = Field(sa_column=_ts(False))


class Vehicle(Row, table=True):
    """A delivery van (planned daily) or a book van (a moving site with a timetable)."""

    __table_args__ = {"schema": SCHEMA}

    vehicle_id: str = Field(primary_key=True)
    name: str
    kind: str  # van | book_van
    depot: str
    capacity_crates: int
    shift_start: str  # "HH:MM"
    shift_end: str
    days: list[str] = Field(sa_column=_json())
    site: str | None = None  # a book van's own site code
    timetable: list[dict[str, Any]] = Field(sa_column=_json())
    active: bool = True
    updated_at: datetime = Field(sa_column=_ts(False))


class Driver(Row, table=True):
    """A driver and the vehicle they drive; a driver token names the driver id."""

    __table_args__ = {"schema": SCHEMA}

    driver_id: str = Field(primary_key=True)
    name: str
    vehicle: str | None = None
    phone: str | None = None
    active: bool = True
    updated_at: datetime = Field(sa_column=_ts(False))


class Shipment(Row, table=True):
    """One item on its way for one transfer: created → picked_up (→ arrived) → delivered.

    `last_site` is where the item was last seen at rest or loaded: its origin, then each
    site it was picked up or unloaded at.
    """

    inserted_in_bulk = True

    __table_args__ = (
        Index("ix_logistics_shipment_barcode_created", "barcode", "created_at"),
        Index("ix_logistics_shipment_crate_on_vehicle", "crate_id",
              postgresql_where=text("status = 'picked_up'")),
        Index("ix_logistics_shipment_waiting", "last_site",
              postgresql_where=text("status IN ('created', 'arrived')")),
        {"schema": SCHEMA},
    )

    shipment_id: str = Field(primary_key=True)
    transfer_id: str = Field(unique=True)
    barcode: str
    from_site: str
    to_site: str
    status: str = "created"  # created | picked_up | arrived | delivered | cancelled | exception
    last_site: str
    route_id: str | None = None
    crate_id: str | None = None
    created_at: datetime = Field(sa_column=_ts(False))
    #: When the item started waiting at `last_site` (its creation, or its last unload).
    waiting_since: datetime | None = Field(default=None, sa_column=_ts())
    picked_up_at: datetime | None = Field(default=None, sa_column=_ts())
    delivered_at: datetime | None = Field(default=None, sa_column=_ts())
    cancelled_at: datetime | None = Field(default=None, sa_column=_ts())


class Crate(Row, table=True):
    """A box of items bound for one next site: packed, sealed, loaded, unloaded as one.

    open (being packed) → sealed → loaded (on `route_id`) → unloaded at `site`.
    """

    __table_args__ = (
        Index("ix_logistics_crate_waiting", "site", "destination",
              postgresql_where=text("status IN ('open', 'sealed')")),
        {"schema": SCHEMA},
    )

    crate_id: str = Field(primary_key=True)
    site: str  # where it is (or was last unloaded)
    destination: str  # the next site its items go to
    status: str = "open"  # open | sealed | loaded | unloaded
    items: int = 0
    capacity: int
    route_id: str | None = None
    created_at: datetime = Field(sa_column=_ts(False))
    sealed_at: datetime | None = Field(default=None, sa_column=_ts())
    loaded_at: datetime | None = Field(default=None, sa_column=_ts())
    unloaded_at: datetime | None = Field(default=None, sa_column=_ts())


class Plan(Row, table=True):
    """One planning run for one day and hub: what was planned, what not and why."""

    __table_args__ = (
        Index("ix_logistics_plan_date", "date", "created_at"),
        {"schema": SCHEMA},
    )

    plan_id: str = Field(primary_key=True)
    date: date
    hub: str
    created_at: datetime = Field(sa_column=_ts(False))
    requested_by: str | None = None
    seconds: float
    solve_seconds: float
    routes: int
    stops: int
    distance_km: float
    duration_min: float
    #: [{"site", "reason"}]: stops that could not be planned.
    unplanned: list[dict[str, Any]] = Field(sa_column=_json())
    #: How many stops kept their vehicle from the plan this one replaces.
    stability: dict[str, Any] = Field(sa_column=_json())


class Route(Row, table=True):
    """One vehicle's route on one day; re-planning the day revises it under the same id.

    `stops` is the ordered list the driver follows, with each stop's progress.
    """

    __table_args__ = (
        Index("ix_logistics_route_date", "date"),
        Index("ix_logistics_route_driver_date", "driver", "date"),
        {"schema": SCHEMA},
    )

    route_id: str = Field(primary_key=True)
    date: date
    hub: str
    vehicle: str
    driver: str | None = None
    plan_id: str
    revision: int = 1
    status: str = "planned"  # planned | in_progress | completed | cancelled
    start: datetime | None = Field(default=None, sa_column=_ts())
    end: datetime | None = Field(default=None, sa_column=_ts())
    distance_km: float = 0.0
    duration_min: float = 0.0
    stops: list[dict[str, Any]] = Field(sa_column=_json())
    completed_at: datetime | None = Field(default=None, sa_column=_ts())


class ShipmentIssue(Row, table=True):
    """An exception on a shipment (missing, damaged, misrouted, refused) until resolved."""

    __tablename__ = "shipment_issue"
    __table_args__ = {"schema": SCHEMA}

    exception_id: str = Field(primary_key=True)
    shipment_id: str = Field(index=True)
    barcode: str
    kind: str
    site: str
    route_id: str | None = None
    crate_id: str | None = None
    note: str | None = None
    reported_by: str | None = None
    reported_at: datetime = Field(sa_column=_ts(False))
    #: found | lost, with the site an item was found at.
    resolution: str | None = None
    resolved_site: str | None = None
    resolved_by: str | None = None
    resolved_at: datetime | None = Field(default=None, sa_column=_ts())


class Scan(Row, table=True):
    """A driver's scan as received; its id makes a re-sent scan harmless."""

    __table_args__ = {"schema": SCHEMA}

    scan_id: str = Field(primary_key=True)
    route_id: str
    site: str
    kind: str  # arrive | pack | seal | load | unload | depart
    barcodes: list[str] = Field(sa_column=_json())
    crate_id: str | None = None
    driver: str | None = None
    time: datetime = Field(sa_column=_ts(False))
    received_at: datetime = Field(sa_column=_ts(False))
    #: What the scan did to each barcode, answered again verbatim when the scan is re-sent.
    outcomes: list[dict[str, Any]] = Field(sa_column=_json())
