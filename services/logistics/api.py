"""Logistics' HTTP surface: drivers scan, dispatchers load the network, staff track items."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, status
from pydantic import AwareDatetime, BaseModel, Field, field_validator
from sqlmodel import col, select

from services.logistics import domain, handlers
from services.logistics.models import Shipment, Site
from shared.errors import NotFound
from shared.service.app import ServiceDep, SessionDep
from shared.service.auth import Principal, current_principal, require
from shared.service.problems import invalid_fields

router = APIRouter()

Staff = Annotated[Principal, Depends(current_principal)]


# --- the network --------------------------------------------------------------------------


class NetworkLoaded(BaseModel):
    sites: int


@router.post("/network", response_model=NetworkLoaded, tags=["network"])
async def post_network(
    service: ServiceDep,
    _: Annotated[Principal, require("dispatcher")],
    document: Annotated[Any, Body(description='A network file: {"sites": [...]}')],
) -> NetworkLoaded:
    """Upsert every site of a network file and announce each on `network.sites`.

    A refused file's 422 names, besides each `loc`, the `site` and its `field`.
    """
    try:
        async with service.uow() as uow:
            count = await handlers.load_network(uow, document)
    except domain.InvalidNetwork as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [
            {**entry, "site": p.site, "field": p.field}
            for p, entry in zip(exc.problems, invalid_fields(exc.errors, "invalid_network"),
                                strict=True)
        ]) from exc
    return NetworkLoaded(sites=count)


class SiteView(BaseModel):
    code: str
    name: str
    kind: str
    lat: float
    lon: float
    hub: str
    opening_hours: dict[str, list[list[str]]]
    courier_days: list[str]
    floating_group: str | None
    active: bool
    updated_at: datetime


def _site_view(site: Site) -> SiteView:
    return SiteView.model_validate(site, from_attributes=True)


@router.get("/sites", response_model=list[SiteView], tags=["network"])
async def list_sites(session: SessionDep, _: Staff) -> list[SiteView]:
    rows = await session.exec(select(Site).order_by(col(Site.code)))
    return [_site_view(s) for s in rows]


@router.get("/sites/{code}", response_model=SiteView, tags=["network"])
async def get_site(code: str, session: SessionDep, _: Staff) -> SiteView:
    site = await session.get(Site, code)
    if site is None:
        raise NotFound(f"no site with code {code!r}")
    return _site_view(site)


# --- driver scans -------------------------------------------------------------------------


#: Barcodes one scan may carry; more is a 422 naming the limit.
MAX_SCAN_BARCODES = 500
#: A scan's `time` must fall in these years.
EARLIEST_YEAR, LATEST_YEAR = 1900, 2200


class ScanIn(BaseModel):
    """One scan from a driver's handset: at a stop, of items (or a crate), at a moment."""

    scan_id: str = Field(min_length=1, description="Unique per scan; a re-sent scan is ignored")
    route_id: str = Field(min_length=1)
    site: str = Field(min_length=1)
    kind: Literal["arrive", "load", "unload", "depart"]
    barcodes: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, max_length=MAX_SCAN_BARCODES,
        description=f"At most {MAX_SCAN_BARCODES} per scan")
    crate_id: str | None = Field(default=None, min_length=1)
    time: AwareDatetime = Field(description=f"In the years {EARLIEST_YEAR}..{LATEST_YEAR}")

    @field_validator("time")
    @classmethod
    def _plausible_time(cls, value: datetime) -> datetime:
        if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
            raise ValueError(f"must fall in the years {EARLIEST_YEAR}..{LATEST_YEAR}")
        return value


class ScanResult(BaseModel):
    barcode: str
    outcome: str = Field(description="picked_up | arrived | delivered | no_open_shipment | "
                                     "ignored: <why>")
    shipment_id: str | None


class ScanOut(BaseModel):
    scan_id: str
    duplicate: bool
    results: list[ScanResult]


@router.post("/scans", response_model=ScanOut, tags=["drivers"])
async def post_scan(
    scan: ScanIn,
    service: ServiceDep,
    principal: Annotated[Principal, require("driver", "dispatcher")],
) -> ScanOut:
    """Apply a scan to each item's open shipment; what happened to each comes back.

    An unknown site is refused (422, `type` `unknown_site`) before anything is recorded.
    """
    async with service.uow() as uow:
        report = await handlers.record_scan(
            uow, scan_id=scan.scan_id, route_id=scan.route_id, site=scan.site,
            kind=scan.kind, barcodes=scan.barcodes, crate_id=scan.crate_id,
            time=scan.time, driver=principal.driver,
        )
    return ScanOut(scan_id=report.scan_id, duplicate=report.duplicate,
                   results=[ScanResult(**r) for r in report.results])


# --- shipments ----------------------------------------------------------------------------


class ShipmentView(BaseModel):
    shipment_id: str
    transfer_id: str
    barcode: str
    from_site: str
    to_site: str
    status: str
    last_site: str
    route_id: str | None
    crate_id: str | None
    created_at: datetime
    picked_up_at: datetime | None
    delivered_at: datetime | None
    cancelled_at: datetime | None


@router.get("/shipments", response_model=list[ShipmentView], tags=["shipments"])
async def list_shipments(
    session: SessionDep,
    _: Staff,
    barcode: Annotated[str, Query(min_length=1, description="The item's barcode")],
) -> list[ShipmentView]:
    """Every shipment of one item, newest first."""
    rows = await session.exec(
        select(Shipment).where(col(Shipment.barcode) == barcode)
        .order_by(col(Shipment.created_at).desc())
    )
    return [ShipmentView.model_validate(s, from_attributes=True) for s in rows]


@router.get("/shipments/{shipment_id}", response_model=ShipmentView, tags=["shipments"])
async def get_shipment(shipment_id: str, session: SessionDep, _: Staff) -> ShipmentView:
    shipment = await session.get(Shipment, shipment_id)
    if shipment is None:
        raise NotFound(f"no shipment with id {shipment_id!r}")
    return ShipmentView.model_validate(shipment, from_attributes=True)
