"""Logistics' tables (schema `logistics`): the network's sites, shipments, driver scans."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, Index, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

SCHEMA = "logistics"


def _ts(nullable: bool = True) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable)


def _json() -> Column[Any]:
    return Column(JSONB, nullable=False)


class Site(SQLModel, table=True):
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
    updated_at: datetime = Field(sa_column=_ts(False))


class Shipment(SQLModel, table=True):
    """One item on its way for one transfer: created → picked_up (→ arrived) → delivered.

    `last_site` is where the item was last seen at rest or loaded: its origin, then each
    site it was picked up or unloaded at.
    """

    __table_args__ = (
        Index("ix_logistics_shipment_barcode_created", "barcode", "created_at"),
        Index("ix_logistics_shipment_crate_on_vehicle", "crate_id",
              postgresql_where=text("status = 'picked_up'")),
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
    picked_up_at: datetime | None = Field(default=None, sa_column=_ts())
    delivered_at: datetime | None = Field(default=None, sa_column=_ts())
    cancelled_at: datetime | None = Field(default=None, sa_column=_ts())


class Scan(SQLModel, table=True):
    """A driver's scan as received; its id makes a re-sent scan harmless."""

    __table_args__ = {"schema": SCHEMA}

    scan_id: str = Field(primary_key=True)
    route_id: str
    site: str
    kind: str  # arrive | load | unload | depart
    barcodes: list[str] = Field(sa_column=_json())
    crate_id: str | None = None
    driver: str | None = None
    time: datetime = Field(sa_column=_ts(False))
    received_at: datetime = Field(sa_column=_ts(False))
    #: What the scan did to each barcode, answered again verbatim when the scan is re-sent.
    outcomes: list[dict[str, Any]] = Field(sa_column=_json())
