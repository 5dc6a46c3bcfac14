"""Logistics' HTTP surface: dispatchers keep the network and plan the day, drivers follow
their route and scan, staff track items and crates."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import column, func, true
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import col, select

from services.logistics import domain, handlers
from services.logistics.models import (
    Crate,
    Driver,
    Plan,
    Route,
    Shipment,
    ShipmentIssue,
    Site,
    Vehicle,
)
from shared.contracts import utcnow
from shared.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from shared.service.app import Service, ServiceDep, SessionDep
from shared.service.auth import Principal, current_principal, require
from shared.service.period import PeriodDep
from shared.service.problems import invalid_fields

router = APIRouter()

Staff = Annotated[Principal, Depends(current_principal)]


# --- the network --------------------------------------------------------------------------


class NetworkLoaded(BaseModel):
    sites: int
    vehicles: int
    drivers: int


@router.post("/network", response_model=NetworkLoaded, tags=["network"])
async def post_network(
    service: ServiceDep,
    _: Annotated[Principal, require("dispatcher")],
    document: Annotated[Any, Body(description='A network file: {"sites": [...]}')],
) -> NetworkLoaded:
    """Upsert every site, vehicle and driver of a network file and announce each
    (`network.sites`, `network.fleet`).

    A refused file's 422 names, besides each `loc`, the `site` (or vehicle, driver) and
    its `field`.
    """
    try:
        async with service.uow() as uow:
            counts = await handlers.load_network(uow, document)
    except domain.InvalidNetwork as exc:
        raise _network_refused(exc) from exc
    return NetworkLoaded(sites=counts.sites, vehicles=counts.vehicles, drivers=counts.drivers)


def _network_refused(exc: domain.InvalidNetwork) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [
        {**entry, "site": p.site, "field": p.field}
        for p, entry in zip(exc.problems, invalid_fields(exc.errors, "invalid_network"),
                            strict=True)
    ])


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
    address: str | None
    service_minutes: int
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


@router.put("/sites/{code}", response_model=SiteView, tags=["network"])
async def put_site(
    code: str,
    service: ServiceDep,
    _: Annotated[Principal, require("dispatcher")],
    document: Annotated[Any, Body(description="One site, as in a network file")],
) -> SiteView:
    """Create or change one site; announced on `network.sites`."""
    try:
        async with service.uow() as uow:
            await handlers.upsert_site(uow, code, document)
    except domain.InvalidNetwork as exc:
        raise _network_refused(exc) from exc
    async with service.ctx.sessionmaker() as session:
        site = await session.get(Site, code)
        assert site is not None
        return _site_view(site)


class VehicleView(BaseModel):
    vehicle_id: str
    name: str
    kind: str
    depot: str
    capacity_crates: int
    shift_start: str
    shift_end: str
    days: list[str]
    site: str | None
    timetable: list[dict[str, Any]]
    active: bool
    updated_at: datetime


class DriverView(BaseModel):
    driver_id: str
    name: str
    vehicle: str | None
    phone: str | None
    active: bool
    updated_at: datetime


@router.get("/vehicles", response_model=list[VehicleView], tags=["network"])
async def list_vehicles(session: SessionDep, _: Staff) -> list[VehicleView]:
    rows = await session.exec(select(Vehicle).order_by(col(Vehicle.vehicle_id)))
    return [VehicleView.model_validate(v, from_attributes=True) for v in rows]


@router.put("/vehicles/{vehicle_id}", response_model=VehicleView, tags=["network"])
async def put_vehicle(
    vehicle_id: str,
    service: ServiceDep,
    _: Annotated[Principal, require("dispatcher")],
    document: Annotated[Any, Body(description="One vehicle, as in a network file")],
) -> VehicleView:
    """Create or change one vehicle; announced on `network.fleet`."""
    try:
        async with service.uow() as uow:
            await handlers.upsert_vehicle(uow, vehicle_id, document)
    except domain.InvalidNetwork as exc:
        raise _network_refused(exc) from exc
    async with service.ctx.sessionmaker() as session:
        return VehicleView.model_validate(await session.get(Vehicle, vehicle_id),
                                          from_attributes=True)


@router.get("/drivers", response_model=list[DriverView], tags=["network"])
async def list_drivers(session: SessionDep, _: Annotated[Principal, require("dispatcher")],
                       ) -> list[DriverView]:
    rows = await session.exec(select(Driver).order_by(col(Driver.driver_id)))
    return [DriverView.model_validate(d, from_attributes=True) for d in rows]


@router.put("/drivers/{driver_id}", response_model=DriverView, tags=["network"])
async def put_driver(
    driver_id: str,
    service: ServiceDep,
    _: Annotated[Principal, require("dispatcher")],
    document: Annotated[Any, Body(description="One driver, as in a network file")],
) -> DriverView:
    """Create or change one driver; announced on `network.fleet`."""
    try:
        async with service.uow() as uow:
            await handlers.upsert_driver(uow, driver_id, document)
    except domain.InvalidNetwork as exc:
        raise _network_refused(exc) from exc
    async with service.ctx.sessionmaker() as session:
        return DriverView.model_validate(await session.get(Driver, driver_id),
                                         from_attributes=True)


class BookVanCall(BaseModel):
    site: str
    name: str | None
    arrive: str
    depart: str


class BookVanDayView(BaseModel):
    vehicle_id: str
    site: str | None
    date: date
    stops: list[BookVanCall]


@router.get("/book-vans/{vehicle_id}/timetable", response_model=BookVanDayView,
            tags=["network"])
async def book_van_day(
    vehicle_id: str,
    service: ServiceDep,
    session: SessionDep,
    _: Staff,
    day: Annotated[date | None, Query(alias="date", description="Default: today")] = None,
) -> BookVanDayView:
    """Where a book van stops on a day, from its timetable (`week` n = the n-th such
    weekday of the month)."""
    van = await session.get(Vehicle, vehicle_id)
    if van is None or van.kind != "book_van":
        raise NotFound(f"no book van {vehicle_id!r}")
    day = day or _local_today(service)
    names = dict((await session.exec(select(Site.code, Site.name))).all())
    calls = [BookVanCall(site=s["site"], name=names.get(s["site"]), arrive=s["arrive"],
                         depart=s["depart"])
             for entry in van.timetable if domain.timetable_applies(entry, day)
             for s in entry["stops"]]
    return BookVanDayView(vehicle_id=vehicle_id, site=van.site, date=day, stops=calls)


def _local_today(service: Service) -> date:
    """Today in the library's time zone."""
    return datetime.now(ZoneInfo(service.settings.timezone)).date()


# --- crates -------------------------------------------------------------------------------


class CrateView(BaseModel):
    crate_id: str
    site: str
    destination: str
    status: str
    items: int
    capacity: int
    route_id: str | None
    created_at: datetime
    sealed_at: datetime | None
    loaded_at: datetime | None
    unloaded_at: datetime | None
    barcodes: list[str] = Field(default_factory=list, description="What is in it now")


class PackOut(BaseModel):
    site: str
    packed: int
    crates: list[dict[str, Any]]


@router.post("/sites/{code}/pack", response_model=PackOut, tags=["crates"])
async def pack_site(
    code: str,
    service: ServiceDep,
    principal: Annotated[Principal, require("dispatcher", "driver", "desk")],
) -> PackOut:
    """Pack every item waiting loose at a site into crates by next site (the hub, or the
    destination when one of today's routes goes there next); full crates are sealed."""
    if not principal.may_speak_for(code):
        raise Forbidden(f"a desk of {principal.site} may not pack at {code}")
    async with service.uow() as uow:
        report = await handlers.pack_site(uow, code, capacity=service.settings.crate_capacity,
                                          today=_local_today(service))
    return PackOut(site=report.site, packed=report.packed, crates=report.crates)


@router.get("/crates/{crate_id}", response_model=CrateView, tags=["crates"])
async def get_crate(crate_id: str, session: SessionDep, _: Staff) -> CrateView:
    crate = await session.get(Crate, crate_id)
    if crate is None:
        raise NotFound(f"no crate {crate_id!r}")
    inside = await session.exec(
        select(Shipment.barcode).where(col(Shipment.crate_id) == crate_id,
                                       col(Shipment.status).in_(domain.OPEN_STATUSES))
        .order_by(col(Shipment.barcode)))
    return CrateView.model_validate({**crate.model_dump(), "barcodes": list(inside)})


# --- driver scans -------------------------------------------------------------------------


#: Barcodes one scan may carry; more is a 422 naming the limit.
MAX_SCAN_BARCODES = 500
#: Scans one offline batch may carry.
MAX_BATCH_SCANS = 500
#: A scan's `time` must fall in these years.
EARLIEST_YEAR, LATEST_YEAR = 1900, 2200

ScanKind = Literal["arrive", "pack", "seal", "load", "unload", "depart"]


class ScanIn(BaseModel):
    """One scan from a driver's handset: at a stop, of items (or a crate), at a moment."""

    scan_id: str = Field(min_length=1, description="Unique per scan; a re-sent scan is ignored")
    route_id: str = Field(min_length=1)
    site: str = Field(min_length=1)
    kind: ScanKind
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

    def to_handler(self) -> handlers.ScanIn:
        return handlers.ScanIn(scan_id=self.scan_id, route_id=self.route_id, site=self.site,
                               kind=self.kind, barcodes=self.barcodes, crate_id=self.crate_id,
                               time=self.time)


class ScanResult(BaseModel):
    barcode: str
    outcome: str = Field(description="picked_up | arrived | delivered | packed | "
                                     "no_open_shipment | ignored: <why>")
    shipment_id: str | None


class ScanOut(BaseModel):
    scan_id: str
    duplicate: bool
    results: list[ScanResult]
    crate: dict[str, Any] | None = Field(default=None,
                                         description="The crate after a crate scan")
    stop: dict[str, Any] | None = Field(default=None,
                                        description="The route's stop after the scan")


def _scanner(principal: Principal) -> str | None:
    """The driver a scan is bound to; None for dispatchers (any route)."""
    return principal.driver if principal.role == "driver" else None


@router.post("/scans", response_model=ScanOut, tags=["drivers"])
async def post_scan(
    scan: ScanIn,
    service: ServiceDep,
    principal: Annotated[Principal, require("driver", "dispatcher")],
) -> ScanOut:
    """Apply a scan; what happened to each item (and crate, and stop) comes back.

    A driver scans only on their own planned route (403; an unknown route is 422
    `unknown_route`) and at its stops or its hub (422 `not_on_route`); hub staff
    (dispatchers) may scan outside a planned route. An unknown site is refused (422
    `unknown_site`) before anything is recorded. A scan with a `crate_id` and no barcodes
    moves the crate and its contents.
    """
    async with service.uow() as uow:
        report = await handlers.record_scan(uow, scan.to_handler(), driver=_scanner(principal))
    return _scan_out(report)


def _scan_out(report: handlers.ScanReport) -> ScanOut:
    return ScanOut(scan_id=report.scan_id, duplicate=report.duplicate,
                   results=[ScanResult(**r) for r in report.results], crate=report.crate,
                   stop=report.stop)


class ScanBatchIn(BaseModel):
    scans: list[ScanIn] = Field(min_length=1, max_length=MAX_BATCH_SCANS)


class ScanBatchEntry(BaseModel):
    scan_id: str
    status: int = Field(description="200, or the status the scan alone would have had")
    result: ScanOut | None = None
    problem: Any = None


class ScanBatchOut(BaseModel):
    applied: int
    duplicates: int
    refused: int
    scans: list[ScanBatchEntry]


@router.post("/scans/batch", response_model=ScanBatchOut, tags=["drivers"])
async def post_scan_batch(
    batch: ScanBatchIn,
    service: ServiceDep,
    principal: Annotated[Principal, require("driver", "dispatcher")],
) -> ScanBatchOut:
    """Scans queued on a handset while offline, sent late: applied in the order of their
    own `time` (not the order sent), each on its own, so one refused scan (answered in
    its entry) never holds back the others; a scan already received counts as duplicate."""
    entries: list[ScanBatchEntry] = []
    for scan in sorted(batch.scans, key=lambda s: (s.time, s.scan_id)):
        try:
            async with service.uow() as uow:
                report = await handlers.record_scan(uow, scan.to_handler(),
                                                    driver=_scanner(principal))
            entries.append(ScanBatchEntry(scan_id=scan.scan_id, status=200,
                                          result=_scan_out(report)))
        except DomainError as exc:
            entries.append(ScanBatchEntry(scan_id=scan.scan_id, status=_status_of(exc),
                                          problem=_problem_of(exc)))
    return ScanBatchOut(
        applied=sum(1 for e in entries if e.result is not None and not e.result.duplicate),
        duplicates=sum(1 for e in entries if e.result is not None and e.result.duplicate),
        refused=sum(1 for e in entries if e.result is None), scans=entries)


def _status_of(exc: DomainError) -> int:
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, Invalid):
        return 422
    return 400


def _problem_of(exc: DomainError) -> Any:
    if isinstance(exc, Invalid):
        return invalid_fields(exc.errors, exc.kind, exc.location)
    return exc.message


# --- routes -------------------------------------------------------------------------------


class PlanIn(BaseModel):
    date: date
    hub: str | None = Field(default=None, min_length=1, description="Default: every hub")
    seconds: float | None = Field(default=None, gt=0, le=600,
                                  description="Solver time limit; default ROUTE_SOLVE_SECONDS")


class PlanView(BaseModel):
    plan_id: str
    date: date
    hub: str
    created_at: datetime
    requested_by: str | None
    seconds: float
    solve_seconds: float
    routes: int
    stops: int
    distance_km: float
    duration_min: float
    unplanned: list[dict[str, Any]]
    stability: dict[str, Any]


class RouteSummary(BaseModel):
    route_id: str
    date: date
    hub: str
    vehicle: str
    driver: str | None
    plan_id: str
    revision: int
    status: str
    start: datetime | None
    end: datetime | None
    distance_km: float
    duration_min: float
    stops_total: int
    stops_served: int
    stops_unserved: int


class PlanOut(BaseModel):
    plan: PlanView
    routes: list[RouteSummary]


def _summary(route: Route) -> RouteSummary:
    return RouteSummary(
        **route.model_dump(exclude={"stops", "completed_at"}),
        stops_total=len(route.stops),
        stops_served=sum(1 for s in route.stops if s["status"] == "served"),
        stops_unserved=sum(1 for s in route.stops if s["status"] == "unserved"))


@router.post("/routes/plan", response_model=list[PlanOut], tags=["routes"])
async def plan_routes(
    body: PlanIn,
    service: ServiceDep,
    principal: Annotated[Principal, require("dispatcher")],
) -> list[PlanOut]:
    """Plan a day's routes (one plan per hub): answered when solved and checked, within
    the solver's time limit. Re-planning a day revises its routes that have not started.
    What could not be planned is listed in `unplanned` with the reason."""
    results = await handlers.plan_day(service.uow, body.date, settings=service.settings,
                                      hub=body.hub, seconds=body.seconds,
                                      requested_by=principal.subject or principal.role)
    return [PlanOut(plan=PlanView.model_validate(r.plan, from_attributes=True),
                    routes=[_summary(route) for route in r.routes]) for r in results]


@router.get("/plans", response_model=list[PlanView], tags=["routes"])
async def list_plans(
    session: SessionDep,
    _: Annotated[Principal, require("dispatcher")],
    day: Annotated[date, Query(alias="date")],
) -> list[PlanView]:
    """Every plan of a day, newest first."""
    rows = await session.exec(select(Plan).where(col(Plan.date) == day)
                              .order_by(col(Plan.created_at).desc()))
    return [PlanView.model_validate(p, from_attributes=True) for p in rows]


@router.get("/routes", response_model=list[RouteSummary], tags=["routes"])
async def list_routes(
    session: SessionDep,
    _: Annotated[Principal, require("dispatcher")],
    day: Annotated[date, Query(alias="date")],
) -> list[RouteSummary]:
    """The day's routes with their progress (the dispatch board)."""
    rows = await session.exec(select(Route).where(col(Route.date) == day)
                              .order_by(col(Route.vehicle)))
    return [_summary(r) for r in rows]


class SiteFigures(BaseModel):
    stops_planned: int = Field(description="Stops at the site on the period's routes "
                                           "(cancelled routes left out)")
    stops_served: int = Field(description="Of those, served")
    delivered: int = Field(description="Shipments delivered there in the period")


class SiteReportRow(SiteFigures):
    site: str


class LogisticsReport(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: date = Field(alias="from")
    to: date
    sites: list[SiteReportRow]
    network: SiteFigures


@router.get("/report", response_model=LogisticsReport, tags=["routes"])
async def logistics_report(
    service: ServiceDep,
    session: SessionDep,
    _: Annotated[Principal, require("dispatcher")],
    period: PeriodDep,
) -> LogisticsReport:
    """Van stops planned and served and shipments delivered per site over a period, in two
    grouped queries: the network report's one call instead of one per day and per route.

    Stops are those of the routes (not cancelled) whose `date` falls in the period, counted
    by their site from each route's `stops` (a site visited twice counts twice); `delivered`
    counts shipments by `to_site` whose `delivered_at` falls in the period's days in the
    library's time zone (TIMEZONE, default Asia/Shanghai). Sites with nothing are left out.
    """
    stop = func.jsonb_array_elements(col(Route.stops)).table_valued(
        column("value", JSONB)).alias("stop")
    site = stop.c.value["site"].astext.label("site")
    stops_q = (
        sa_select(site, func.count(),
                  func.count().filter(stop.c.value["status"].astext == "served"))
        .select_from(Route).join(stop, true())
        .where(col(Route.date) >= period.start, col(Route.date) <= period.end,
               col(Route.status) != "cancelled")
        .group_by(site))
    start, end = period.bounds(service.settings.timezone)
    delivered_q = (
        sa_select(col(Shipment.to_site), func.count())
        .where(col(Shipment.delivered_at) >= start, col(Shipment.delivered_at) < end)
        .group_by(col(Shipment.to_site)))
    stops = {code: (int(p), int(s)) for code, p, s in (await session.execute(stops_q)).all()}
    delivered = {code: int(n) for code, n in (await session.execute(delivered_q)).all()}
    rows = [SiteReportRow(site=code, stops_planned=stops.get(code, (0, 0))[0],
                          stops_served=stops.get(code, (0, 0))[1],
                          delivered=delivered.get(code, 0))
            for code in sorted(stops.keys() | delivered.keys())]
    return LogisticsReport(
        from_=period.start, to=period.end, sites=rows,
        network=SiteFigures(stops_planned=sum(r.stops_planned for r in rows),
                            stops_served=sum(r.stops_served for r in rows),
                            delivered=sum(r.delivered for r in rows)))


class CrateLine(BaseModel):
    crate_id: str
    items: int
    status: str


class StopView(BaseModel):
    seq: int
    site: str
    name: str | None
    address: str | None
    lat: float | None
    lon: float | None
    opening_hours: list[list[str]] = Field(description="That day's opening hours")
    arrival: datetime
    departure: datetime
    deliveries: int = Field(description="Crates planned to drop")
    pickups: int = Field(description="Crates planned to collect")
    status: str
    drop: list[CrateLine] = Field(description="Crates for this stop now (on the van or at "
                                              "the hub)")
    drop_loose: int = Field(description="Items for this stop at the hub not yet in a crate")
    collect: list[CrateLine]
    collect_loose: int = Field(description="Items waiting there not yet in a crate")
    reason: str | None = None


class RouteView(RouteSummary):
    stops: list[StopView]


async def _route_view(session: Any, route: Route) -> RouteView:
    codes = [s["site"] for s in route.stops]
    sites = {s.code: s for s in (await session.exec(
        select(Site).where(col(Site.code).in_([*codes, route.hub])))).all()}
    hub_of = {c: s.hub for c, s in sites.items()}
    crates = (await session.exec(select(Crate).where(
        (col(Crate.route_id) == route.route_id) & (col(Crate.status) == "loaded")
        | col(Crate.site).in_([*codes, route.hub]) & col(Crate.status).in_(("open", "sealed"))
    ))).all()
    loose = (await session.exec(
        select(Shipment.last_site, Shipment.to_site, Shipment.crate_id)
        .where(col(Shipment.status).in_(("created", "arrived")),
               col(Shipment.last_site).in_([*codes, route.hub])))).all()
    packed = {c.crate_id for c in crates if c.status in ("open", "sealed")}
    day_name = domain.weekday_of(route.date)
    stops = []
    for s in route.stops:
        code = s["site"]
        site = sites.get(code)
        drop = [CrateLine(crate_id=c.crate_id, items=c.items, status=c.status) for c in crates
                if c.destination == code and (
                    (c.route_id == route.route_id and c.status == "loaded")
                    or (c.site == route.hub and c.status in ("open", "sealed")))]
        collect = [CrateLine(crate_id=c.crate_id, items=c.items, status=c.status)
                   for c in crates if c.site == code and c.status in ("open", "sealed")]
        drop_loose = sum(1 for at, to, crate in loose if at == route.hub
                         and crate not in packed
                         and domain.next_leg(at, to, hub_of) == code)
        collect_loose = sum(1 for at, _to, crate in loose if at == code and crate not in packed)
        stops.append(StopView(
            seq=s["seq"], site=code, name=site.name if site else None,
            address=site.address if site else None, lat=site.lat if site else None,
            lon=site.lon if site else None,
            opening_hours=site.opening_hours.get(day_name, []) if site else [],
            arrival=s["arrival"], departure=s["departure"], deliveries=s["deliveries"],
            pickups=s["pickups"], status=s["status"], drop=drop, drop_loose=drop_loose,
            collect=collect, collect_loose=collect_loose, reason=s.get("reason")))
    return RouteView(**_summary(route).model_dump(), stops=stops)


@router.get("/routes/{route_id}", response_model=RouteView, tags=["routes"])
async def get_route(route_id: str, session: SessionDep, principal: Staff) -> RouteView:
    """A route with its stops, crates and progress; a driver sees only their own."""
    route = await session.get(Route, route_id)
    if route is None:
        raise NotFound(f"no route {route_id!r}")
    if principal.role == "driver" and route.driver != principal.driver:
        raise Forbidden(f"route {route_id} is not driver {principal.driver}'s route")
    return await _route_view(session, route)


@router.get("/drivers/{driver_id}/route", response_model=RouteView, tags=["drivers"])
async def driver_route(
    driver_id: str,
    service: ServiceDep,
    session: SessionDep,
    principal: Annotated[Principal, require("driver", "dispatcher")],
    day: Annotated[date | None, Query(alias="date", description="Default: today")] = None,
) -> RouteView:
    """The driver's route of the day: stops in order with ETA, address, opening hours and
    the crates to drop and collect. A driver token sees only its own route (403)."""
    if principal.role == "driver" and principal.driver != driver_id:
        raise Forbidden(f"a driver token of {principal.driver} may not read {driver_id}'s "
                        "route")
    day = day or _local_today(service)
    route = (await session.exec(
        select(Route).where(col(Route.driver) == driver_id, col(Route.date) == day,
                            col(Route.status) != "cancelled")
        .order_by(col(Route.route_id)))).first()
    if route is None:
        raise NotFound(f"driver {driver_id} has no route on {day}")
    return await _route_view(session, route)


class UnservedIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500,
                        description="Why: closed, no access, ...")
    time: AwareDatetime | None = None


@router.post("/routes/{route_id}/stops/{seq}/unserved", response_model=RouteSummary,
             tags=["drivers"])
async def stop_unserved(
    route_id: str,
    seq: Annotated[int, Path(ge=1, le=10_000)],
    body: UnservedIn,
    service: ServiceDep,
    principal: Annotated[Principal, require("driver", "dispatcher")],
) -> RouteSummary:
    """A stop that cannot be served; its crates wait for the next plan."""
    async with service.uow() as uow:
        route = await handlers.report_unserved(uow, route_id, seq, body.reason,
                                               driver=_scanner(principal),
                                               time=body.time or utcnow())
    return _summary(route)


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
    waiting_since: datetime | None
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


@router.get("/shipments/late", response_model=list[ShipmentView], tags=["shipments"])
async def late_shipments(
    service: ServiceDep,
    session: SessionDep,
    _: Annotated[Principal, require("dispatcher")],
    hours: Annotated[float | None, Query(gt=0, le=24 * 365,
                                         description="Default: ROUTE_TARGET_HOURS")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[ShipmentView]:
    """Open shipments older than the delivery target, oldest first."""
    cutoff = utcnow() - timedelta(hours=hours or service.settings.route_target_hours)
    rows = await session.exec(
        select(Shipment).where(col(Shipment.status).in_(domain.OPEN_STATUSES),
                               col(Shipment.created_at) < cutoff)
        .order_by(col(Shipment.created_at)).limit(limit))
    return [ShipmentView.model_validate(s, from_attributes=True) for s in rows]


@router.get("/shipments/{shipment_id}", response_model=ShipmentView, tags=["shipments"])
async def get_shipment(shipment_id: str, session: SessionDep, _: Staff) -> ShipmentView:
    shipment = await session.get(Shipment, shipment_id)
    if shipment is None:
        raise NotFound(f"no shipment with id {shipment_id!r}")
    return ShipmentView.model_validate(shipment, from_attributes=True)


# --- exceptions ---------------------------------------------------------------------------


class ExceptionIn(BaseModel):
    barcode: str = Field(min_length=1)
    kind: Literal["missing", "damaged", "misrouted", "refused"]
    site: str = Field(min_length=1)
    route_id: str | None = Field(default=None, min_length=1)
    crate_id: str | None = Field(default=None, min_length=1)
    note: str | None = Field(default=None, max_length=2000)
    time: AwareDatetime | None = None


class ExceptionView(BaseModel):
    exception_id: str
    shipment_id: str
    barcode: str
    kind: str
    site: str
    route_id: str | None
    crate_id: str | None
    note: str | None
    reported_by: str | None
    reported_at: datetime
    resolution: str | None
    resolved_site: str | None
    resolved_by: str | None
    resolved_at: datetime | None


@router.post("/exceptions", response_model=ExceptionView, status_code=201,
             tags=["exceptions"])
async def post_exception(
    body: ExceptionIn,
    service: ServiceDep,
    principal: Annotated[Principal, require("driver", "dispatcher")],
) -> ExceptionView:
    """An item missing, damaged, misrouted or refused: its shipment stops until resolved."""
    async with service.uow() as uow:
        issue = await handlers.report_exception(
            uow, barcode=body.barcode, kind=body.kind, site=body.site, route_id=body.route_id,
            crate_id=body.crate_id, note=body.note,
            reported_by=principal.driver or principal.subject, time=body.time or utcnow())
    return ExceptionView.model_validate(issue, from_attributes=True)


@router.get("/exceptions", response_model=list[ExceptionView], tags=["exceptions"])
async def list_exceptions(
    session: SessionDep,
    _: Annotated[Principal, require("dispatcher")],
    open_only: Annotated[bool, Query(alias="open")] = True,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[ExceptionView]:
    query = select(ShipmentIssue)
    if open_only:
        query = query.where(col(ShipmentIssue.resolution).is_(None))
    rows = await session.exec(query.order_by(col(ShipmentIssue.reported_at)).limit(limit))
    return [ExceptionView.model_validate(i, from_attributes=True) for i in rows]


class ResolveIn(BaseModel):
    resolution: Literal["found", "lost"]
    site: str | None = Field(default=None, min_length=1,
                             description="Where a found item is (required for found)")


@router.post("/exceptions/{exception_id}/resolve", response_model=ExceptionView,
             tags=["exceptions"])
async def resolve_exception(
    exception_id: str,
    body: ResolveIn,
    service: ServiceDep,
    principal: Annotated[Principal, require("dispatcher")],
) -> ExceptionView:
    """found: the shipment waits at that site again (delivered if it is its destination);
    lost: it stays stopped."""
    async with service.uow() as uow:
        issue = await handlers.resolve_exception(
            uow, exception_id, resolution=body.resolution, site=body.site,
            by=principal.subject, time=utcnow())
    return ExceptionView.model_validate(issue, from_attributes=True)
