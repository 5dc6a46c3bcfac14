"""Logistics' use cases: each runs inside the caller's transaction (state + inbox + outbox).

Transfers arrive in batches of hundreds on the hot path; `prefetch` loads the shipments
of every transfer in the batch with one query, so the per-event handlers below never ask
the database themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlmodel import col, select

from services.logistics import domain
from services.logistics.models import Scan, Shipment, Site
from shared.contracts import Envelope, Event, new_id, utcnow
from shared.contracts.circulation import TransferCancelled, TransferCompleted, TransferRequested
from shared.contracts.logistics import (
    ShipmentArrived,
    ShipmentCancelled,
    ShipmentCreated,
    ShipmentDelivered,
    ShipmentPickedUp,
    SiteUpserted,
)
from shared.errors import Invalid
from shared.messaging.consumer import Handlers
from shared.messaging.unit_of_work import SqlUnitOfWork, UnitOfWork

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
        last_site=data.from_site, created_at=utcnow(),
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


async def load_network(uow: SqlUnitOfWork, document: Any) -> int:
    """Validate a network file and upsert every site, announcing each on `network.sites`.

    All or nothing: one bad site rejects the whole file (domain.InvalidNetwork), so the
    network is never half loaded. One statement upserts every site, so two loads at once
    both succeed.
    """
    sites = domain.validate_network(document)
    now = utcnow()
    rows = [
        {"code": s.code, "name": s.name, "kind": s.kind, "lat": s.lat, "lon": s.lon,
         "hub": s.hub, "opening_hours": s.opening_hours, "courier_days": s.courier_days,
         "floating_group": s.floating_group, "active": s.active, "updated_at": now}
        for s in sites
    ]
    stmt = pg_insert(Site).values(rows)
    await uow.session.exec(stmt.on_conflict_do_update(
        index_elements=["code"],
        set_={name: stmt.excluded[name] for name in rows[0] if name != "code"},
    ))
    for s in sites:
        uow.emit(site_upserted(s), subject=s.code)
    return len(sites)


def site_upserted(site: domain.Site) -> SiteUpserted:
    """The announcement of one validated site."""
    return SiteUpserted(
        code=site.code, name=site.name, kind=domain.site_kind(site.kind), lat=site.lat,
        lon=site.lon, hub=site.hub,
        opening_hours={domain.weekday(day): [(opens, closes) for opens, closes in intervals]
                       for day, intervals in site.opening_hours.items()},
        courier_days=[domain.weekday(day) for day in site.courier_days],
        floating_group=site.floating_group, active=site.active,
    )


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


async def record_scan(
    uow: SqlUnitOfWork,
    *,
    scan_id: str,
    route_id: str,
    site: str,
    kind: str,
    barcodes: Sequence[str],
    crate_id: str | None,
    time: datetime,
    driver: str | None = None,
) -> ScanReport:
    """Apply one driver scan to each item's open shipment; a re-sent scan changes nothing.

    A scan with a crate but no barcodes means the crate's contents: the items loaded into
    it that are still on their way.
    """
    if await uow.repo(Site).get(site) is None:
        raise UnknownSite(site)
    claimed = await uow.session.exec(
        pg_insert(Scan)
        .values(scan_id=scan_id, route_id=route_id, site=site, kind=kind,
                barcodes=list(barcodes), crate_id=crate_id, driver=driver, time=time,
                received_at=utcnow(), outcomes=[])
        .on_conflict_do_nothing(index_elements=["scan_id"])
        .returning(col(Scan.scan_id))
    )
    if claimed.first() is None:
        stored = await uow.repo(Scan).get(scan_id)
        return ScanReport(scan_id, duplicate=True,
                          results=list(stored.outcomes) if stored is not None else [])

    wanted = list(dict.fromkeys(barcodes))
    open_by_barcode = await _open_shipments(uow, wanted, crate_id)
    if not wanted:
        wanted = sorted(open_by_barcode)

    results: list[dict[str, Any]] = []
    for barcode in wanted:
        candidates = open_by_barcode.get(barcode, [])
        if not candidates:
            results.append({"barcode": barcode, "outcome": "no_open_shipment",
                            "shipment_id": None})
            continue
        shipment, effect = first_that_moves(candidates, kind, site)
        if effect.moved:
            move(uow, shipment, effect, site=site, route_id=route_id, crate_id=crate_id,
                 time=time)
        results.append({"barcode": barcode, "outcome": effect.describe(),
                        "shipment_id": shipment.shipment_id})
    await uow.session.exec(
        update(Scan).where(col(Scan.scan_id) == scan_id).values(outcomes=results)
    )
    return ScanReport(scan_id, duplicate=False, results=results)


async def _open_shipments(uow: SqlUnitOfWork, barcodes: list[str],
                          crate_id: str | None) -> dict[str, list[Shipment]]:
    """Open shipments of the scanned items (or of the crate's), newest first, locked."""
    query = select(Shipment).where(col(Shipment.status).in_(domain.OPEN_STATUSES))
    if barcodes:
        query = query.where(col(Shipment.barcode).in_(barcodes))
    elif crate_id:
        query = query.where(col(Shipment.crate_id) == crate_id,
                            col(Shipment.status) == "picked_up")
    else:
        return {}
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
        shipment.route_id, shipment.crate_id = route_id, crate_id
        shipment.picked_up_at = shipment.picked_up_at or time
        uow.emit(ShipmentPickedUp(shipment_id=shipment.shipment_id,
                                  transfer_id=shipment.transfer_id, barcode=shipment.barcode,
                                  site=site, route_id=route_id, crate_id=crate_id),
                 subject=subject)
    elif effect.outcome == "arrived":
        uow.emit(ShipmentArrived(shipment_id=shipment.shipment_id,
                                 transfer_id=shipment.transfer_id, barcode=shipment.barcode,
                                 site=site), subject=subject)
    else:
        shipment.delivered_at = time
        uow.emit(ShipmentDelivered(shipment_id=shipment.shipment_id,
                                   transfer_id=shipment.transfer_id, barcode=shipment.barcode,
                                   site=site), subject=subject)
