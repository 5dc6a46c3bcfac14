"""Logistics' use cases: each runs inside the caller's transaction (state + inbox + outbox).

Transfers arrive in batches of hundreds on the hot path; `prefetch` loads the shipments
of every transfer in the batch with one query, so the per-event handlers below never ask
the database themselves.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import select as sa_select
from sqlalchemy import text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.logistics import domain, routing, solver
from services.logistics.models import (
    Crate,
    Driver,
    Plan,
    Route,
    Scan,
    Shipment,
    ShipmentIssue,
    Site,
    Vehicle,
)
from shared.contracts import Envelope, Event, new_id, utcnow
from shared.contracts.circulation import TransferCancelled, TransferCompleted, TransferRequested
from shared.contracts.logistics import (
    BookVanDay,
    BookVanStop,
    DriverUpserted,
    RouteCompleted,
    RoutePlanned,
    RouteStop,
    ShipmentArrived,
    ShipmentCancelled,
    ShipmentCreated,
    ShipmentDelivered,
    ShipmentException,
    ShipmentPickedUp,
    SiteUpserted,
    VehicleUpserted,
)
from shared.errors import Conflict, Forbidden, Invalid, NotFound
from shared.messaging.consumer import Handlers
from shared.messaging.unit_of_work import SqlUnitOfWork, UnitOfWork
from shared.service.settings import Settings

log = logging.getLogger(__name__)

handlers = Handlers()


# --- transfers from circulation ----------------------------------------------------------

@handlers.before_batch
async def prefetch(uow: UnitOfWork, events: Sequence[tuple[Envelope, Event]]) -> None:
    """Load the shipment (or its absence) of every transfer the batch mentions, in one query.

    Locked (in one order everywhere) so a driver's scan and a cancellation of the same
    shipment take turns instead of deciding on a stale status.
    """
    ids = {p.transfer_id for _, p in events
           if isinstance(p, TransferRequested | TransferCancelled | TransferCompleted)}
    await uow.repo(Shipment).find("transfer_id", ids, lock=True)


async def _shipment_of(uow: UnitOfWork, transfer_id: str) -> Shipment | None:
    return await uow.repo(Shipment).get_by("transfer_id", transfer_id)


@handlers.on(TransferRequested)
async def on_transfer_requested(uow: UnitOfWork, env: Envelope, data: TransferRequested) -> None:
    """One shipment per transfer: a redelivered or repeated request ships nothing twice."""
    if await _shipment_of(uow, data.transfer_id) is not None:
        return
    shipment = Shipment(
        shipment_id=new_id(), transfer_id=data.transfer_id, barcode=data.barcode,
        from_site=data.from_site, to_site=data.to_site, status="created",
        last_site=data.from_site, created_at=utcnow(), waiting_since=env.time,
    )
    uow.repo(Shipment).add(shipment)
    uow.emit(
        ShipmentCreated(shipment_id=shipment.shipment_id, transfer_id=data.transfer_id,
                        barcode=data.barcode, from_site=data.from_site, to_site=data.to_site),
        subject=data.barcode, cause=env,
    )


@handlers.on(TransferCancelled)
async def on_transfer_cancelled(uow: UnitOfWork, env: Envelope, data: TransferCancelled) -> None:
    """Stop the shipment of a cancelled transfer unless the item was already delivered.

    A cancellation that arrives before its request (a replay after a broker loss can
    re-publish the request after a newer cancellation) leaves a cancelled shipment, so the
    late request ships nothing.
    """
    shipment = await _shipment_of(uow, data.transfer_id)
    if shipment is None:
        log.info("cancelled transfer has no shipment yet; recording the cancellation",
                 extra={"transfer_id": data.transfer_id})
        uow.repo(Shipment).add(Shipment(
            shipment_id=new_id(), transfer_id=data.transfer_id, barcode=data.barcode,
            from_site="", to_site="", status="cancelled", last_site="",
            created_at=utcnow(), cancelled_at=env.time))
        return
    if not domain.can_cancel(shipment.status):
        return
    shipment.status = "cancelled"
    shipment.cancelled_at = env.time
    uow.emit(
        ShipmentCancelled(shipment_id=shipment.shipment_id, transfer_id=shipment.transfer_id,
                          barcode=shipment.barcode),
        subject=shipment.barcode, cause=env,
    )


@handlers.on(TransferCompleted)
async def on_transfer_completed(uow: UnitOfWork, env: Envelope, data: TransferCompleted) -> None:
    """The item was checked in at its destination before the driver's unload scan.

    The book is physically there, so the shipment is delivered: a shipment never stays
    open on a vehicle after circulation has closed its transfer.
    """
    shipment = await _shipment_of(uow, data.transfer_id)
    if shipment is None or shipment.status in ("delivered", "cancelled"):
        return
    shipment.status = "delivered"
    shipment.delivered_at = env.time
    shipment.last_site = data.site
    uow.emit(
        ShipmentDelivered(shipment_id=shipment.shipment_id, transfer_id=shipment.transfer_id,
                          barcode=shipment.barcode, site=data.site),
        subject=shipment.barcode, cause=env,
    )


# --- the network --------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkCounts:
    sites: int
    vehicles: int
    drivers: int


async def _upsert(uow: SqlUnitOfWork, model: type[Any], key: str,
                  rows: Sequence[dict[str, Any]]) -> None:
    """Insert or update rows by primary key in one statement (two loads at once both win)."""
    if not rows:
        return
    stmt = pg_insert(model).values(list(rows))
    await uow.session.exec(stmt.on_conflict_do_update(
        index_elements=[key],
        set_={name: stmt.excluded[name] for name in rows[0] if name != key},
    ))


def _site_row(s: domain.Site, now: datetime) -> dict[str, Any]:
    return {"code": s.code, "name": s.name, "kind": s.kind, "lat": s.lat, "lon": s.lon,
            "hub": s.hub, "opening_hours": s.opening_hours, "courier_days": s.courier_days,
            "floating_group": s.floating_group, "active": s.active, "address": s.address,
            "service_minutes": s.service_minutes, "updated_at": now}


def _vehicle_row(v: domain.VehicleSpec, now: datetime) -> dict[str, Any]:
    return {"vehicle_id": v.id, "name": v.name, "kind": v.kind, "depot": v.depot,
            "capacity_crates": v.capacity_crates, "shift_start": v.shift_start,
            "shift_end": v.shift_end, "days": list(v.days), "site": v.site,
            "timetable": [_timetable_day(d) for d in v.timetable], "active": v.active,
            "updated_at": now}


def _timetable_day(day: domain.BookVanDay) -> dict[str, Any]:
    return {"day": day.day, "week": day.week,
            "stops": [{"site": s.site, "arrive": s.arrive, "depart": s.depart}
                      for s in day.stops]}


def _driver_row(d: domain.DriverSpec, now: datetime) -> dict[str, Any]:
    return {"driver_id": d.id, "name": d.name, "vehicle": d.vehicle, "phone": d.phone,
            "active": d.active, "updated_at": now}


async def load_network(uow: SqlUnitOfWork, document: Any) -> NetworkCounts:
    """Validate a network file; upsert its sites, vehicles and drivers and announce each.

    All or nothing: one bad entry rejects the whole file (domain.InvalidNetwork naming
    every problem), so the network is never half loaded.
    """
    network = domain.parse_network(document)
    now = utcnow()
    await _upsert(uow, Site, "code", [_site_row(s, now) for s in network.sites])
    await _upsert(uow, Vehicle, "vehicle_id", [_vehicle_row(v, now) for v in network.vehicles])
    await _upsert(uow, Driver, "driver_id", [_driver_row(d, now) for d in network.drivers])
    for s in network.sites:
        uow.emit(site_upserted(s), subject=s.code)
    for v in network.vehicles:
        uow.emit(vehicle_upserted(v), subject=v.id)
    for d in network.drivers:
        uow.emit(driver_upserted(d), subject=d.id)
    return NetworkCounts(len(network.sites), len(network.vehicles), len(network.drivers))


def site_upserted(site: domain.Site) -> SiteUpserted:
    """The announcement of one validated site."""
    return SiteUpserted(
        code=site.code, name=site.name, kind=domain.site_kind(site.kind), lat=site.lat,
        lon=site.lon, hub=site.hub,
        opening_hours={domain.weekday(day): [(opens, closes) for opens, closes in intervals]
                       for day, intervals in site.opening_hours.items()},
        courier_days=[domain.weekday(day) for day in site.courier_days],
        floating_group=site.floating_group, active=site.active, address=site.address,
        service_minutes=site.service_minutes,
    )


def vehicle_upserted(v: domain.VehicleSpec) -> VehicleUpserted:
    return VehicleUpserted(
        vehicle_id=v.id, name=v.name, kind="book_van" if v.kind == "book_van" else "van",
        depot=v.depot, capacity_crates=v.capacity_crates, shift_start=v.shift_start,
        shift_end=v.shift_end, days=[domain.weekday(d) for d in v.days], site=v.site,
        timetable=[BookVanDay(day=domain.weekday(d.day), week=d.week,
                              stops=[BookVanStop(site=s.site, arrive=s.arrive, depart=s.depart)
                                     for s in d.stops]) for d in v.timetable],
        active=v.active,
    )


def driver_upserted(d: domain.DriverSpec) -> DriverUpserted:
    return DriverUpserted(driver_id=d.id, name=d.name, vehicle=d.vehicle, active=d.active)


def _with_key(raw: Any, name: str, value: str) -> Any:
    """The body of an edit with the key from the path (a body naming another is refused)."""
    if not isinstance(raw, dict):
        raise Invalid("must be a JSON object", field="", kind="invalid")
    if raw.get(name, value) != value:
        raise Invalid(f"{name} {raw.get(name)!r} does not match the path's {value!r}",
                      field=name, kind="mismatch")
    return {**raw, name: value}


async def upsert_site(uow: SqlUnitOfWork, code: str, raw: Any) -> domain.Site:
    """Create or change one site (a dispatcher's edit) and announce it."""
    kinds = dict((await uow.session.exec(select(Site.code, Site.kind))).all())
    site = domain.validate_site(_with_key(raw, "code", code), hubs=kinds)
    await _upsert(uow, Site, "code", [_site_row(site, utcnow())])
    uow.emit(site_upserted(site), subject=site.code)
    return site


async def upsert_vehicle(uow: SqlUnitOfWork, vehicle_id: str, raw: Any) -> domain.VehicleSpec:
    """Create or change one vehicle and announce it."""
    kinds = dict((await uow.session.exec(select(Site.code, Site.kind))).all())
    vehicle = domain.validate_vehicle(_with_key(raw, "id", vehicle_id), sites=kinds)
    if vehicle.site is not None:
        other = (await uow.session.exec(select(Vehicle.vehicle_id).where(
            col(Vehicle.site) == vehicle.site, col(Vehicle.vehicle_id) != vehicle.id))).first()
        if other is not None:
            raise Invalid(f"{vehicle.site} is already the site of book van {other}",
                          field="site", kind="site_taken")
    await _upsert(uow, Vehicle, "vehicle_id", [_vehicle_row(vehicle, utcnow())])
    uow.emit(vehicle_upserted(vehicle), subject=vehicle.id)
    return vehicle


async def upsert_driver(uow: SqlUnitOfWork, driver_id: str, raw: Any) -> domain.DriverSpec:
    """Create or change one driver and announce it."""
    vehicles = set((await uow.session.exec(select(Vehicle.vehicle_id))).all())
    driver = domain.validate_driver(_with_key(raw, "id", driver_id), vehicles=vehicles)
    await _upsert(uow, Driver, "driver_id", [_driver_row(driver, utcnow())])
    uow.emit(driver_upserted(driver), subject=driver.id)
    return driver


async def hub_map(session: AsyncSession) -> dict[str, str]:
    """Every site's serving hub (a hub serves itself)."""
    return dict((await session.exec(select(Site.code, Site.hub))).all())


# --- crates -------------------------------------------------------------------------------


async def new_crate_ids(uow: SqlUnitOfWork, count: int) -> list[str]:
    """`count` fresh crate barcodes from the schema's serial."""
    if count <= 0:
        return []
    rows = await uow.session.execute(
        text("SELECT nextval('logistics.crate_serial') FROM generate_series(1, :n)"),
        {"n": count})
    return [domain.crate_barcode(int(serial)) for (serial,) in rows]


async def direct_pairs(session: AsyncSession, day: date) -> set[tuple[str, str]]:
    """(a, b) such that one route of `day` visits a and later b: items may skip the hub."""
    pairs: set[tuple[str, str]] = set()
    routes = await session.exec(select(Route).where(col(Route.date) == day,
                                                    col(Route.status) != "cancelled"))
    for route in routes:
        sites = [stop["site"] for stop in route.stops]
        for i, a in enumerate(sites):
            pairs.update((a, b) for b in sites[i + 1:] if b != a)
    return pairs


@dataclass
class PackReport:
    site: str
    packed: int
    crates: list[dict[str, Any]]


async def pack_site(uow: SqlUnitOfWork, site: str, *, capacity: int,
                    today: date) -> PackReport:
    """Pack every item waiting loose at `site` into crates by its next site.

    The next site is the hub (or, at a hub, the destination or its hub), or the
    destination itself when one of today's routes visits this site and then it. Open
    crates for the same next site are topped up first; full crates are sealed.
    """
    if await uow.repo(Site).get(site) is None:
        raise UnknownSite(site)
    hubs = await hub_map(uow.session)
    direct = await direct_pairs(uow.session, today)
    waiting = (await uow.session.exec(
        select(Shipment).where(col(Shipment.status).in_(("created", "arrived")),
                               col(Shipment.last_site) == site)
        .order_by(col(Shipment.waiting_since), col(Shipment.shipment_id)).with_for_update()
    )).all()
    open_rows = (await uow.session.exec(
        select(Crate).where(col(Crate.site) == site, col(Crate.status) == "open")
        .order_by(col(Crate.created_at)).with_for_update())).all()
    packed_in = {c.crate_id for c in (await uow.session.exec(
        select(Crate).where(col(Crate.site) == site,
                            col(Crate.status).in_(("open", "sealed"))))).all()}
    loose: list[tuple[str, str]] = []
    by_id = {s.shipment_id: s for s in waiting}
    for shipment in waiting:
        if shipment.crate_id in packed_in:
            continue
        leg = domain.next_leg(site, shipment.to_site, hubs,
                              direct=(site, shipment.to_site) in direct)
        if leg is not None:
            loose.append((shipment.shipment_id, leg))
    ids = iter(await new_crate_ids(uow, len(loose)))
    packing = domain.pack(loose, [domain.OpenCrate(c.crate_id, c.destination, c.items)
                                  for c in open_rows], capacity, lambda: next(ids))
    now = utcnow()
    crates = {c.crate_id: c for c in open_rows}
    for crate_id, destination in packing.new:
        crate = Crate(crate_id=crate_id, site=site, destination=destination, status="open",
                      items=0, capacity=capacity, created_at=now)
        uow.repo(Crate).add(crate)
        crates[crate_id] = crate
    for shipment_id, crate_id in packing.into.items():
        by_id[shipment_id].crate_id = crate_id
    touched = []
    for crate_id, items in packing.filled.items():
        crate = crates[crate_id]
        if crate.items == items and crate_id not in dict(packing.new):
            continue
        crate.items = items
        if items >= crate.capacity:
            crate.status, crate.sealed_at = "sealed", now
        touched.append({"crate_id": crate_id, "destination": crate.destination,
                        "items": items, "status": crate.status})
    return PackReport(site=site, packed=len(packing.into), crates=touched)


# --- driver scans -------------------------------------------------------------------------


class UnknownSite(Invalid):
    """A scan at a site the network does not have (a typo would misplace every item)."""

    def __init__(self, site: str) -> None:
        super().__init__(f"unknown site {site!r}", field="site", kind="unknown_site")
        self.site = site


@dataclass
class ScanReport:
    scan_id: str
    duplicate: bool
    results: list[dict[str, Any]] = field(default_factory=list)
    crate: dict[str, Any] | None = None
    stop: dict[str, Any] | None = None


@dataclass(frozen=True)
class ScanIn:
    scan_id: str
    route_id: str
    site: str
    kind: str
    barcodes: Sequence[str]
    crate_id: str | None
    time: datetime


async def _route_for_scan(uow: SqlUnitOfWork, scan: ScanIn,
                          driver: str | None) -> Route | None:
    """The scan's route, checked: a driver scans only on a planned route of theirs, at its
    stops or its hub. Hub staff (dispatchers) may scan outside any planned route."""
    route = await uow.session.get(Route, scan.route_id, with_for_update=True)
    if route is not None and route.status == "cancelled":
        route = None
    if driver is None:
        return route
    if route is None:
        raise Invalid(f"no planned route {scan.route_id!r}", field="route_id",
                      kind="unknown_route")
    if route.driver != driver:
        raise Forbidden(f"route {scan.route_id} is not driver {driver}'s route")
    if scan.site != route.hub and all(stop["site"] != scan.site for stop in route.stops):
        raise Invalid(f"{scan.site} is not a stop of route {scan.route_id}", field="site",
                      kind="not_on_route")
    return route


async def record_scan(uow: SqlUnitOfWork, scan: ScanIn, *,
                      driver: str | None) -> ScanReport:
    """Apply one scan; a re-sent scan (same `scan_id`) changes nothing and answers the same.

    `driver` is the scanning driver (their route only, its stops only); None for a
    dispatcher, who may scan on any planned route. Item scans move each item's open
    shipment; crate scans (a crate and no barcodes) move the crate and everything in it.
    """
    if await uow.repo(Site).get(scan.site) is None:
        raise UnknownSite(scan.site)
    route = await _route_for_scan(uow, scan, driver)
    claimed = await uow.session.exec(
        pg_insert(Scan)
        .values(scan_id=scan.scan_id, route_id=scan.route_id, site=scan.site, kind=scan.kind,
                barcodes=list(scan.barcodes), crate_id=scan.crate_id, driver=driver,
                time=scan.time, received_at=utcnow(), outcomes=[])
        .on_conflict_do_nothing(index_elements=["scan_id"])
        .returning(col(Scan.scan_id))
    )
    if claimed.first() is None:
        stored = await uow.repo(Scan).get(scan.scan_id)
        outcomes = list(stored.outcomes) if stored is not None else []
        return ScanReport(scan.scan_id, duplicate=True,
                          results=[o for o in outcomes if "barcode" in o],
                          crate=next((o["crate"] for o in outcomes if "crate" in o), None),
                          stop=next((o["stop"] for o in outcomes if "stop" in o), None))

    report = ScanReport(scan.scan_id, duplicate=False)
    if scan.kind in ("pack", "seal") or (scan.crate_id and not scan.barcodes):
        await _crate_scan(uow, scan, report)
    elif scan.kind in ("load", "unload"):
        await _item_scan(uow, scan, report)
    if route is not None and (scan.kind in ("arrive", "depart") or report.results
                              or report.crate):
        report.stop = _stop_progress(uow, route, scan)
    stored_outcomes: list[dict[str, Any]] = list(report.results)
    if report.crate is not None:
        stored_outcomes.append({"crate": report.crate})
    if report.stop is not None:
        stored_outcomes.append({"stop": report.stop})
    await uow.session.exec(
        update(Scan).where(col(Scan.scan_id) == scan.scan_id).values(outcomes=stored_outcomes)
    )
    return report


async def _item_scan(uow: SqlUnitOfWork, scan: ScanIn, report: ScanReport) -> None:
    wanted = list(dict.fromkeys(scan.barcodes))
    open_by_barcode = await _open_shipments(uow, wanted)
    for barcode in wanted:
        candidates = open_by_barcode.get(barcode, [])
        if not candidates:
            report.results.append({"barcode": barcode, "outcome": "no_open_shipment",
                                   "shipment_id": None})
            continue
        shipment, effect = first_that_moves(candidates, scan.kind, scan.site)
        if effect.moved:
            move(uow, shipment, effect, site=scan.site, route_id=scan.route_id,
                 crate_id=scan.crate_id, time=scan.time)
        report.results.append({"barcode": barcode, "outcome": effect.describe(),
                               "shipment_id": shipment.shipment_id})


async def _crate_scan(uow: SqlUnitOfWork, scan: ScanIn, report: ScanReport) -> None:
    """pack (items into a crate), seal, load or unload a crate and what is in it."""
    if not scan.crate_id:
        raise Invalid(f"a {scan.kind} scan names the crate", field="crate_id",
                      kind="crate_required")
    crate = await uow.session.get(Crate, scan.crate_id, with_for_update=True)
    if scan.kind == "pack":
        crate = await _pack_scan(uow, scan, crate, report)
        report.crate = _crate_state(crate)
        return
    if crate is None:
        # A label never packed here (a handset's own tote): it holds what was loaded
        # into it item by item, still on its way.
        contents = _by_barcode((await uow.session.exec(
            select(Shipment).where(col(Shipment.crate_id) == scan.crate_id,
                                   col(Shipment.status) == "picked_up")
            .order_by(col(Shipment.shipment_id)).with_for_update())).all())
        if not contents:
            report.crate = {"crate_id": scan.crate_id, "outcome": "ignored: unknown crate"}
            return
        for shipment in contents:
            effect = domain.apply_scan(_state(shipment), scan.kind, scan.site)
            if effect.moved:
                move(uow, shipment, effect, site=scan.site, route_id=scan.route_id,
                     crate_id=scan.crate_id, time=scan.time)
            report.results.append({"barcode": shipment.barcode, "outcome": effect.describe(),
                                   "shipment_id": shipment.shipment_id})
        return
    after = domain.apply_crate_scan(crate.status, scan.kind)
    if after is None or (scan.kind == "load" and crate.site != scan.site):
        where = f" at {crate.site}" if crate.status != "loaded" else f" on {crate.route_id}"
        report.crate = {**_crate_state(crate),
                        "outcome": f"ignored: the crate is {crate.status}{where}"}
        return
    contents = _by_barcode((await uow.session.exec(
        select(Shipment).where(col(Shipment.crate_id) == crate.crate_id,
                               col(Shipment.status).in_(domain.OPEN_STATUSES))
        .order_by(col(Shipment.shipment_id)).with_for_update())).all())
    crate.status = after
    if scan.kind == "seal":
        crate.sealed_at = crate.sealed_at or scan.time
    elif scan.kind == "load":
        crate.route_id, crate.loaded_at = scan.route_id, scan.time
    else:
        crate.site, crate.unloaded_at = scan.site, scan.time
    if scan.kind in ("load", "unload"):
        for shipment in contents:
            effect = domain.apply_scan(_state(shipment), scan.kind, scan.site)
            if effect.moved:
                move(uow, shipment, effect, site=scan.site, route_id=scan.route_id,
                     crate_id=crate.crate_id, time=scan.time)
            report.results.append({"barcode": shipment.barcode, "outcome": effect.describe(),
                                   "shipment_id": shipment.shipment_id})
    report.crate = {**_crate_state(crate), "outcome": after}


async def _pack_scan(uow: SqlUnitOfWork, scan: ScanIn, crate: Crate | None,
                     report: ScanReport) -> Crate:
    """Items scanned into a crate at a site; a new crate label opens a crate there."""
    assert scan.crate_id is not None
    if crate is not None and (crate.status != "open" or crate.site != scan.site):
        raise Conflict(f"crate {crate.crate_id} is {crate.status} at {crate.site}; pack into "
                       "an open crate at this site")
    hubs = await hub_map(uow.session)
    waiting = await _open_shipments(uow, list(dict.fromkeys(scan.barcodes)))
    direct = await direct_pairs(uow.session, scan.time.date())
    capacity = uow.settings.crate_capacity if crate is None else crate.capacity
    for barcode in dict.fromkeys(scan.barcodes):
        here = [s for s in waiting.get(barcode, [])
                if s.status in ("created", "arrived") and s.last_site == scan.site]
        if not here:
            report.results.append({"barcode": barcode, "outcome":
                                   f"ignored: not waiting at {scan.site}", "shipment_id": None})
            continue
        shipment = here[0]
        leg = domain.next_leg(scan.site, shipment.to_site, hubs,
                              direct=(scan.site, shipment.to_site) in direct)
        if crate is None:
            crate = Crate(crate_id=scan.crate_id, site=scan.site, destination=leg or "",
                          status="open", items=0, capacity=capacity, created_at=scan.time)
            uow.repo(Crate).add(crate)
        if leg != crate.destination:
            outcome = f"ignored: goes to {leg}, the crate goes to {crate.destination}"
        elif crate.items >= crate.capacity:
            outcome = f"ignored: the crate is full ({crate.capacity} items)"
        elif shipment.crate_id == crate.crate_id:
            outcome = "ignored: already in this crate"
        else:
            shipment.crate_id = crate.crate_id
            crate.items += 1
            outcome = "packed"
        report.results.append({"barcode": barcode, "outcome": outcome,
                               "shipment_id": shipment.shipment_id})
    if crate is None:
        raise Invalid("none of the scanned items waits here to be packed", field="barcodes",
                      kind="nothing_to_pack")
    return crate


def _by_barcode(shipments: Sequence[Shipment]) -> list[Shipment]:
    """A crate's contents in barcode order (locked in id order, as everywhere): the
    driver's handset lists them the same way every time."""
    return sorted(shipments, key=lambda s: (s.barcode, s.shipment_id))


def _crate_state(crate: Crate) -> dict[str, Any]:
    return {"crate_id": crate.crate_id, "status": crate.status, "site": crate.site,
            "destination": crate.destination, "items": crate.items}


async def _open_shipments(uow: SqlUnitOfWork, barcodes: list[str]) -> dict[str, list[Shipment]]:
    """Open shipments of the scanned items, newest first, locked."""
    if not barcodes:
        return {}
    query = select(Shipment).where(col(Shipment.status).in_(domain.OPEN_STATUSES),
                                   col(Shipment.barcode).in_(barcodes))
    rows = await uow.session.exec(query.order_by(col(Shipment.shipment_id)).with_for_update())
    found: dict[str, list[Shipment]] = {}
    for shipment in sorted(rows, key=lambda s: s.created_at, reverse=True):
        found.setdefault(shipment.barcode, []).append(shipment)
    return found


def first_that_moves(candidates: list[Shipment], kind: str,
                     site: str) -> tuple[Shipment, domain.ScanEffect]:
    """The newest open shipment the scan moves; else the newest, with why it didn't."""
    effects = [(s, domain.apply_scan(_state(s), kind, site)) for s in candidates]
    return next(((s, e) for s, e in effects if e.moved), effects[0])


def _state(shipment: Shipment) -> domain.ShipmentState:
    return domain.ShipmentState(status=shipment.status, from_site=shipment.from_site,
                                to_site=shipment.to_site, last_site=shipment.last_site)


def move(uow: UnitOfWork, shipment: Shipment, effect: domain.ScanEffect, *, site: str,
         route_id: str, crate_id: str | None, time: datetime) -> None:
    """A scan moved the shipment: its new status and place, and the event saying so."""
    shipment.status = effect.outcome
    shipment.last_site = site
    subject = shipment.barcode
    if effect.outcome == "picked_up":
        shipment.route_id = route_id
        shipment.crate_id = crate_id or shipment.crate_id
        shipment.picked_up_at = shipment.picked_up_at or time
        uow.emit(ShipmentPickedUp(shipment_id=shipment.shipment_id,
                                  transfer_id=shipment.transfer_id, barcode=shipment.barcode,
                                  site=site, route_id=route_id, crate_id=shipment.crate_id),
                 subject=subject)
    elif effect.outcome == "arrived":
        shipment.waiting_since = time
        uow.emit(ShipmentArrived(shipment_id=shipment.shipment_id,
                                 transfer_id=shipment.transfer_id, barcode=shipment.barcode,
                                 site=site), subject=subject)
    else:
        shipment.delivered_at = time
        uow.emit(ShipmentDelivered(shipment_id=shipment.shipment_id,
                                   transfer_id=shipment.transfer_id, barcode=shipment.barcode,
                                   site=site), subject=subject)


def _stop_progress(uow: UnitOfWork, route: Route, scan: ScanIn) -> dict[str, Any] | None:
    """Record the route's progress at the scanned stop; complete the route when it is done."""
    if route.status == "planned":
        route.status = "in_progress"
    stops = [dict(stop) for stop in route.stops]
    index = next((i for i, stop in enumerate(stops)
                  if stop["site"] == scan.site and stop["status"] not in ("served", "unserved")),
                 None)
    if index is None:
        return None
    stop = stops[index]
    stop["status"] = domain.stop_after_scan(stop["status"], scan.kind)
    stamp = scan.time.isoformat()
    stop["arrived_at"] = stop.get("arrived_at") or stamp
    if stop["status"] == "served":
        stop["departed_at"] = stamp
    route.stops = stops
    _complete_if_done(uow, route, scan.time)
    return {"seq": stop["seq"], "site": stop["site"], "status": stop["status"]}


def _complete_if_done(uow: UnitOfWork, route: Route, time: datetime) -> None:
    if route.status == "completed" or not domain.route_finished(
            [stop["status"] for stop in route.stops]):
        return
    route.status, route.completed_at = "completed", time
    uow.emit(RouteCompleted(
        route_id=route.route_id, date=route.date, vehicle=route.vehicle, driver=route.driver,
        completed_stops=sum(1 for s in route.stops if s["status"] == "served"),
        unserved_stops=sum(1 for s in route.stops if s["status"] == "unserved"),
        exceptions=sum(int(s.get("exceptions", 0)) for s in route.stops),
    ), subject=route.route_id)


async def report_unserved(uow: SqlUnitOfWork, route_id: str, seq: int, reason: str, *,
                          driver: str | None, time: datetime) -> Route:
    """A stop the driver could not serve (closed, no access): its crates wait for the next
    plan, which counts them again because nothing was loaded or unloaded there."""
    route = await uow.session.get(Route, route_id, with_for_update=True)
    if route is None or route.status == "cancelled":
        raise NotFound(f"no planned route {route_id!r}")
    if driver is not None and route.driver != driver:
        raise Forbidden(f"route {route_id} is not driver {driver}'s route")
    stops = [dict(stop) for stop in route.stops]
    stop = next((s for s in stops if s["seq"] == seq), None)
    if stop is None:
        raise NotFound(f"route {route_id} has no stop {seq}")
    if stop["status"] == "served":
        raise Conflict(f"stop {seq} ({stop['site']}) was already served")
    stop.update(status="unserved", reason=reason, departed_at=time.isoformat())
    route.stops = stops
    if route.status == "planned":
        route.status = "in_progress"
    _complete_if_done(uow, route, time)
    return route


# --- shipment exceptions ------------------------------------------------------------------


async def report_exception(uow: SqlUnitOfWork, *, barcode: str, kind: str, site: str,
                           route_id: str | None, crate_id: str | None, note: str | None,
                           reported_by: str | None, time: datetime) -> ShipmentIssue:
    """A driver or hub reports an item missing, damaged, misrouted or refused.

    The item's open shipment stops (status `exception`) until a dispatcher resolves it,
    so nothing plans or scans it meanwhile.
    """
    if await uow.repo(Site).get(site) is None:
        raise UnknownSite(site)
    shipments = (await _open_shipments(uow, [barcode])).get(barcode)
    if not shipments:
        raise NotFound(f"item {barcode} has no open shipment")
    shipment = shipments[0]
    shipment.status = "exception"
    issue = ShipmentIssue(exception_id=new_id(), shipment_id=shipment.shipment_id,
                          barcode=barcode, kind=kind, site=site, route_id=route_id,
                          crate_id=crate_id or shipment.crate_id, note=note,
                          reported_by=reported_by, reported_at=time)
    uow.repo(ShipmentIssue).add(issue)
    if route_id:
        route = await uow.session.get(Route, route_id, with_for_update=True)
        if route is not None:
            route.stops = [{**s, "exceptions": int(s.get("exceptions", 0)) + 1}
                           if s["site"] == site else s for s in route.stops]
    uow.emit(ShipmentException(
        exception_id=issue.exception_id, shipment_id=shipment.shipment_id,
        transfer_id=shipment.transfer_id, barcode=barcode,
        kind=cast(Any, kind), site=site, route_id=route_id, crate_id=issue.crate_id,
        note=note), subject=barcode)
    return issue


async def resolve_exception(uow: SqlUnitOfWork, exception_id: str, *, resolution: str,
                            site: str | None, by: str | None, time: datetime) -> ShipmentIssue:
    """`found` at a site: the shipment waits there again (delivered if that is its
    destination); `lost`: the shipment stays stopped and the item is for circulation to
    declare missing."""
    issue = await uow.session.get(ShipmentIssue, exception_id, with_for_update=True)
    if issue is None:
        raise NotFound(f"no exception {exception_id!r}")
    if issue.resolution is not None:
        raise Conflict(f"exception {exception_id} was already resolved ({issue.resolution})")
    shipment = await uow.session.get(Shipment, issue.shipment_id, with_for_update=True)
    assert shipment is not None
    if resolution == "found":
        if site is None:
            raise Invalid("a found item names the site it is at", field="site")
        if await uow.repo(Site).get(site) is None:
            raise UnknownSite(site)
        shipment.last_site, shipment.waiting_since = site, time
        if site == shipment.to_site:
            shipment.status, shipment.delivered_at = "delivered", time
            uow.emit(ShipmentDelivered(shipment_id=shipment.shipment_id,
                                       transfer_id=shipment.transfer_id,
                                       barcode=shipment.barcode, site=site),
                     subject=shipment.barcode)
        else:
            shipment.status = "arrived" if site != shipment.from_site else "created"
    issue.resolution, issue.resolved_site = resolution, site
    issue.resolved_by, issue.resolved_at = by, time
    return issue


# --- the daily plan -----------------------------------------------------------------------


@dataclass
class PlanningInput:
    """Everything one hub's plan for one day is made from, read in one transaction."""

    day: date
    hub: str
    sites: dict[str, Site]
    vehicles: list[Vehicle]
    drivers: dict[str, str]  # vehicle -> driver
    demand: dict[str, domain.Demand]
    routes: dict[str, Route]  # the day's routes of this hub, by vehicle


async def planning_input(uow: SqlUnitOfWork, day: date, hub: str) -> PlanningInput:
    session = uow.session
    sites = {s.code: s for s in (await session.exec(select(Site))).all()}
    if sites.get(hub) is None or sites[hub].kind != "hub":
        raise Invalid(f"{hub!r} is not a hub of the network", field="hub", kind="unknown_hub")
    hub_of = {code: s.hub for code, s in sites.items()}
    vehicles = (await session.exec(
        select(Vehicle).where(col(Vehicle.depot) == hub, col(Vehicle.kind) == "van",
                              col(Vehicle.active)).order_by(col(Vehicle.vehicle_id)))).all()
    drivers: dict[str, str] = {}
    for d in (await session.exec(select(Driver).where(col(Driver.active))
                                 .order_by(col(Driver.driver_id)))).all():
        if d.vehicle is not None:
            drivers.setdefault(d.vehicle, d.driver_id)
    crates = (await session.exec(select(Crate).where(
        col(Crate.status).in_(("open", "sealed"))))).all()
    packed = {c.crate_id: c for c in crates}
    capacity = uow.settings.crate_capacity
    drop_crates: dict[str, int] = {}
    collect_crates: dict[str, int] = {}
    for c in crates:
        if c.site == hub:
            drop_crates[c.destination] = drop_crates.get(c.destination, 0) + 1
        elif hub_of.get(c.site) == hub:
            collect_crates[c.site] = collect_crates.get(c.site, 0) + 1
    loose_drop: dict[str, int] = {}
    loose_collect: dict[str, int] = {}
    oldest: dict[str, datetime] = {}
    waiting = (await session.execute(
        sa_select(Shipment.last_site, Shipment.to_site, Shipment.crate_id,  # type: ignore[call-overload]
                  Shipment.waiting_since, Shipment.created_at)
        .where(col(Shipment.status).in_(("created", "arrived"))))).all()
    for at, to, crate_id, since, created in waiting:
        crate = packed.get(crate_id) if crate_id else None
        in_crate = crate is not None and crate.site == at
        since = since or created
        if at == hub:
            leg = crate.destination if in_crate and crate else domain.next_leg(at, to, hub_of)
            if leg is None:
                continue
            if not in_crate:
                loose_drop[leg] = loose_drop.get(leg, 0) + 1
            oldest[leg] = min(oldest.get(leg, since), since)
        elif hub_of.get(at) == hub:
            if not in_crate:
                loose_collect[at] = loose_collect.get(at, 0) + 1
            oldest[at] = min(oldest.get(at, since), since)
    demand = {}
    for code in set(drop_crates) | set(collect_crates) | set(loose_drop) | set(loose_collect):
        demand[code] = domain.Demand(
            drop=drop_crates.get(code, 0) + domain.crates_for(loose_drop.get(code, 0), capacity),
            collect=collect_crates.get(code, 0)
            + domain.crates_for(loose_collect.get(code, 0), capacity),
            oldest=oldest.get(code))
    routes = {r.vehicle: r for r in (await session.exec(
        select(Route).where(col(Route.date) == day, col(Route.hub) == hub))).all()}
    return PlanningInput(day, hub, sites, list(vehicles), drivers, demand, routes)


def _plan_site(site: Site) -> domain.PlanSite:
    return domain.PlanSite(code=site.code, hub=site.hub, opening_hours=site.opening_hours,
                           courier_days=site.courier_days, service_minutes=site.service_minutes,
                           active=site.active)


def _plan_vehicle(v: Vehicle) -> domain.PlanVehicle:
    return domain.PlanVehicle(vehicle_id=v.vehicle_id, depot=v.depot,
                              capacity=v.capacity_crates, shift_start=v.shift_start,
                              shift_end=v.shift_end, days=v.days)


def _windows(site: domain.PlanSite, day_name: str) -> tuple[tuple[int, int], ...]:
    return tuple((w.open, w.close) for w in routing.windows_for(
        site.opening_hours, day_name, site.service_minutes * 60))


def load_travel_matrix(path: Path | None) -> dict[tuple[str, str], tuple[int, int]]:
    """(from, to) → (metres, seconds) from a supplied matrix file; empty without one."""
    if path is None:
        return {}
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    codes = doc["sites"]
    minutes = doc["minutes"]
    km = doc.get("km")
    found: dict[tuple[str, str], tuple[int, int]] = {}
    for i, a in enumerate(codes):
        for j, b in enumerate(codes):
            metres = round(km[i][j] * 1000) if km is not None else -1
            found[(a, b)] = (metres, round(minutes[i][j] * 60))
    return found


@dataclass
class Built:
    problem: routing.Problem
    needs: list[domain.StopNeed]
    vehicles: list[Vehicle]
    unplanned: list[domain.Unplanned]
    metres: list[list[int]]
    kept_routes: list[Route]


def build_problem(data: PlanningInput, settings: Settings, now: datetime) -> Built:
    """The routing problem of one hub's day: stops, windows, vans, travel matrices.

    Vans whose route of the day has already started keep it: they and their stops stay
    out of the problem. A stop no van could serve even alone (its windows against the
    shifts and the drive from the hub) is listed as unplanned instead of failing the plan.
    """
    day_name = domain.weekday_of(data.day)
    kept = [r for r in data.routes.values() if r.status in ("in_progress", "completed")]
    busy = {r.vehicle for r in kept}
    done_sites = {stop["site"] for r in kept for stop in r.stops}
    vehicles = [v for v in data.vehicles if day_name in v.days and v.vehicle_id not in busy]
    needs, unplanned = domain.stops_to_plan(
        data.day, data.hub, {c: _plan_site(s) for c, s in data.sites.items()},
        {c: d for c, d in data.demand.items() if c not in done_sites},
        [_plan_vehicle(v) for v in vehicles], now=now,
        target=timedelta(hours=settings.route_target_hours), windows=_windows)
    hub = data.sites[data.hub]
    locations = [hub] + [data.sites[n.site] for n in needs]
    metres, seconds = routing.travel_matrices([(s.lat, s.lon) for s in locations],
                                              settings.route_road_factor,
                                              settings.route_speed_kmh)
    supplied = load_travel_matrix(settings.travel_matrix_file)
    if supplied:
        for i, a in enumerate(locations):
            for j, b in enumerate(locations):
                if (a.code, b.code) in supplied:
                    m, t = supplied[(a.code, b.code)]
                    seconds[i][j] = t
                    if m >= 0:
                        metres[i][j] = m
    # Leaving a stop out must cost more than any detour to serve it (at most twice the
    # longest drive, plus a stability penalty), so only a stop the vans cannot take is
    # left out; a prize of the same scale as the drives keeps the solver's search sound.
    penalty = round(settings.route_stability_minutes * 60)
    prize = 4 * (max((max(row) for row in seconds), default=0) + penalty) + 3600
    previous: dict[str, str] = {}
    for route in data.routes.values():
        if route.status == "planned":
            for stop in route.stops:
                previous[f"{stop['site']}#{stop.get('part', 1)}"] = route.vehicle
    problem = routing.Problem(
        depots=(data.hub,),
        stops=tuple(routing.Stop(key=f"{n.site}#{n.part}", delivery=n.delivery,
                                 pickup=n.pickup, service=n.service_s,
                                 windows=tuple(routing.Window(o, c) for o, c in n.windows),
                                 prize=prize * (2 if n.overdue else 1))
                    for n in needs),
        vehicles=tuple(routing.Vehicle(key=v.vehicle_id, capacity=v.capacity_crates, depot=0,
                                       start=domain.seconds_of(v.shift_start),
                                       end=domain.seconds_of(v.shift_end))
                       for v in vehicles),
        distance=seconds, duration=seconds, previous=previous,
        moved_penalty=penalty,
    )
    problem, alone = _drop_unservable(problem, needs)
    needs = [n for i, n in enumerate(needs) if i not in alone]
    for i in sorted(alone):
        unplanned.append(domain.Unplanned(
            f"{built_site(problem, i)}", "no van can reach it within its opening hours "
                                         "and a shift, or it needs more crates than a van "
                                         "carries"))
    return Built(problem, needs, vehicles, unplanned, _sub(metres, alone), kept)


def built_site(problem: routing.Problem, index: int) -> str:
    return problem.stops[index].key.split("#")[0] if index < len(problem.stops) else "?"


def _sub(matrix: Sequence[Sequence[int]], drop: set[int]) -> list[list[int]]:
    """The matrix without the locations of dropped stops (depot is location 0)."""
    keep = [i for i in range(len(matrix)) if i == 0 or (i - 1) not in drop]
    return [[matrix[i][j] for j in keep] for i in keep]


def _drop_unservable(problem: routing.Problem,
                     needs: Sequence[domain.StopNeed]) -> tuple[routing.Problem, set[int]]:
    """Stops that fail even as the only stop of every van, taken out (named by the caller)."""
    bad: set[int] = set()
    for i in range(len(problem.stops)):
        if not any(not routing.check(_only(problem, i), routing.Proposal({v: [0]}))
                   for v in range(len(problem.vehicles))):
            bad.add(i)
    if not bad:
        return problem, bad
    keep = [i for i in range(len(problem.stops)) if i not in bad]
    return replace(problem, stops=tuple(problem.stops[i] for i in keep),
                   distance=_sub(problem.distance, bad),
                   duration=_sub(problem.duration, bad)), bad


def _only(problem: routing.Problem, i: int) -> routing.Problem:
    """The problem reduced to stop `i` alone."""
    locations = [0, 1 + i]
    return replace(problem, stops=(problem.stops[i],),
                   distance=[[problem.distance[a][b] for b in locations] for a in locations],
                   duration=[[problem.duration[a][b] for b in locations] for a in locations])


class PlanRefused(Conflict):
    """The solver's best plan failed our own check: nothing is published."""


@dataclass
class PlanResult:
    plan: Plan
    routes: list[Route]


async def plan_day(new_uow: Callable[[], SqlUnitOfWork], day: date, *, settings: Settings,
                   hub: str | None = None, seconds: float | None = None,
                   requested_by: str | None = None) -> list[PlanResult]:
    """Plan `day` for every hub (or one): read, solve outside any transaction, check, publish.

    Reading and writing are two transactions: a solve takes seconds and must not hold
    locks. The write takes an advisory lock per day, so two plans of one day take turns
    and each revises the routes the previous one wrote.
    """
    async with new_uow() as uow:
        hubs = [hub] if hub else list((await uow.session.exec(
            select(Site.code).where(col(Site.kind) == "hub", col(Site.active))
            .order_by(col(Site.code)))).all())
        inputs = [await planning_input(uow, day, h) for h in hubs]
    results = []
    for data in inputs:
        results.append(await _plan_hub(new_uow, data, settings, seconds, requested_by))
    return results


async def _plan_hub(new_uow: Callable[[], SqlUnitOfWork], data: PlanningInput,
                    settings: Settings, seconds: float | None,
                    requested_by: str | None) -> PlanResult:
    now = utcnow()
    built = build_problem(data, settings, now)
    limit = seconds if seconds is not None else settings.route_solve_seconds
    started = time.monotonic()
    problem = built.problem
    proposal = routing.Proposal({})
    if problem.stops and problem.vehicles:
        proposal = await solver.solve_in_process(problem, limit, settings.route_seed)
        if not proposal.feasible or routing.check(problem, proposal):
            # Everything cannot be served: let the solver leave stops out, at a high price.
            problem = replace(problem, stops=tuple(replace(s, required=False)
                                                   for s in problem.stops))
            proposal = await solver.solve_in_process(problem, limit, settings.route_seed)
            if not proposal.feasible or routing.check(problem, proposal):
                proposal = routing.trim(problem, proposal)
    elif problem.stops:
        built.unplanned.extend(domain.Unplanned(n.site, "no van runs that day")
                               for n in built.needs)
    solve_seconds = time.monotonic() - started
    violations = routing.check(problem, proposal)
    if violations:
        raise PlanRefused("the plan failed the feasibility check: "
                          + "; ".join(v.message for v in violations[:10]))
    served = {i for seq in proposal.sequences.values() for i in seq}
    for i, need in enumerate(built.needs):
        if i not in served and problem.stops:
            built.unplanned.append(domain.Unplanned(
                need.site, "left out: the vans' capacity and shifts are used up"))
    async with new_uow() as uow:
        await uow.session.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                                  {"k": _plan_lock(data.day, data.hub)})
        current = {r.vehicle: r for r in (await uow.session.exec(
            select(Route).where(col(Route.date) == data.day, col(Route.hub) == data.hub)
            .with_for_update())).all()}
        return _write_plan(uow, data, built, problem, proposal, current, settings,
                           limit, solve_seconds, requested_by, now)


def _plan_lock(day: date, hub: str) -> int:
    digest = hashlib.blake2b(f"plan:{day}:{hub}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _write_plan(uow: SqlUnitOfWork, data: PlanningInput, built: Built,
                problem: routing.Problem, proposal: routing.Proposal,
                current: dict[str, Route], settings: Settings, limit: float,
                solve_seconds: float, requested_by: str | None, now: datetime) -> PlanResult:
    zone = ZoneInfo(settings.timezone)
    midnight = datetime.combine(data.day, dt_time(0), tzinfo=zone)

    def at(seconds: int) -> datetime:
        return midnight + timedelta(seconds=seconds)

    plan_id = new_id()
    routes: list[Route] = []
    assigned: dict[str, str] = {}
    total_km = total_min = 0.0
    for v_index, sequence in sorted(proposal.sequences.items()):
        if not sequence:
            continue
        vehicle = built.vehicles[v_index]
        scheduled = routing.schedule(problem, v_index, list(sequence))
        locs = [0] + [problem.location(i) for i in sequence] + [0]
        km = sum(built.metres[a][b] for a, b in itertools.pairwise(locs)) / 1000
        stops = []
        for seq, visit in enumerate(scheduled.visits, start=1):
            need = built.needs[visit.stop]
            assigned[f"{need.site}#{need.part}"] = vehicle.vehicle_id
            stops.append({"seq": seq, "site": need.site, "part": need.part,
                          "arrival": at(visit.start).isoformat(),
                          "departure": at(visit.departure).isoformat(),
                          "deliveries": need.delivery, "pickups": need.pickup,
                          "status": "pending"})
        old = current.get(vehicle.vehicle_id)
        if old is not None and old.status in ("in_progress", "completed"):
            continue
        route = old or Route(route_id=domain.route_id_for(data.day, vehicle.vehicle_id),
                             date=data.day, hub=data.hub, vehicle=vehicle.vehicle_id,
                             plan_id=plan_id, revision=0, stops=[])
        route.plan_id, route.revision, route.status = plan_id, route.revision + 1, "planned"
        route.driver = data.drivers.get(vehicle.vehicle_id)
        route.start, route.end = at(scheduled.start), at(scheduled.end)
        route.distance_km = round(km, 2)
        route.duration_min = round((scheduled.end - scheduled.start) / 60, 1)
        route.stops = stops
        if old is None:
            uow.repo(Route).add(route)
        routes.append(route)
        total_km += route.distance_km
        total_min += route.duration_min
    planned_vehicles = {r.vehicle for r in routes}
    for vehicle_id, old in current.items():
        if old.status == "planned" and vehicle_id not in planned_vehicles and old.stops:
            old.plan_id, old.revision, old.status, old.stops = plan_id, old.revision + 1, \
                "cancelled", []
            routes.append(old)
    for route in routes:
        uow.emit(_route_planned(route), subject=route.route_id)
    plan = Plan(plan_id=plan_id, date=data.day, hub=data.hub, created_at=now,
                requested_by=requested_by, seconds=limit,
                solve_seconds=round(solve_seconds, 2),
                routes=sum(1 for r in routes if r.status == "planned"),
                stops=sum(len(r.stops) for r in routes), distance_km=round(total_km, 2),
                duration_min=round(total_min, 1),
                unplanned=[{"site": u.site, "reason": u.reason} for u in built.unplanned],
                stability=domain.stability(problem.previous, assigned))
    uow.repo(Plan).add(plan)
    return PlanResult(plan, routes)


def _route_planned(route: Route) -> RoutePlanned:
    return RoutePlanned(
        route_id=route.route_id, plan_id=route.plan_id, revision=route.revision,
        date=route.date, vehicle=route.vehicle, driver=route.driver, depot=route.hub,
        start=route.start, end=route.end,
        stops=[RouteStop(seq=s["seq"], site=s["site"], eta=s["arrival"],
                         arrival=datetime.fromisoformat(s["arrival"]),
                         departure=datetime.fromisoformat(s["departure"]),
                         deliveries=s["deliveries"], pickups=s["pickups"])
               for s in route.stops],
        distance_km=route.distance_km, duration_min=route.duration_min)


async def planned_today(service: Any) -> None:
    """The scheduled plan: once the day's planning time has passed, plan the day if no
    plan of it exists yet. One replica plans (a session advisory lock); the others skip."""
    settings: Settings = service.settings
    if not settings.route_plan_at:
        return
    now = datetime.now(ZoneInfo(settings.timezone))
    if now.time() < dt_time.fromisoformat(settings.route_plan_at):
        return
    async with service.engine.connect() as conn:
        got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                  {"k": _plan_lock(now.date(), "*schedule*")})).scalar()
        if not got:
            return
        try:
            exists = (await conn.execute(text(
                "SELECT 1 FROM logistics.plan WHERE date = :d LIMIT 1"), {"d": now.date()})
            ).first()
            if exists is None:
                log.info("planning the day on schedule", extra={"date": str(now.date())})
                await plan_day(service.uow, now.date(), settings=settings,
                               requested_by="schedule")
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"),
                               {"k": _plan_lock(now.date(), "*schedule*")})
