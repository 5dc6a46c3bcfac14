"""Circulation's use cases: each runs inside the caller's transaction (state + inbox + outbox).

A consumer hands a whole fetched batch to one transaction; `prefetch` loads every item,
transfer and loan the batch touches in a few queries so the per-event handlers below find
them in the session's identity map instead of asking the database one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import col, select

from services.circulation import domain
from services.circulation.models import Anomaly, Item, Loan, Site, Transfer
from shared.events import (
    BranchCheckin,
    BranchCheckout,
    BranchItemMissing,
    BranchRenewal,
    Envelope,
    ItemCataloged,
    ItemCheckedIn,
    ItemCheckedOut,
    ItemStatusChanged,
    Payload,
    ShipmentDelivered,
    SiteUpserted,
    TransferCancelled,
    TransferCompleted,
    TransferRequested,
    new_id,
    utcnow,
)
from shared.outbox import UnitOfWork


async def prefetch(uow: UnitOfWork, events: Sequence[tuple[Envelope, Payload]]) -> None:
    s = uow.session
    barcodes = {p.barcode for _, p in events if hasattr(p, "barcode")}
    transfer_ids = {p.transfer_id for _, p in events if isinstance(p, ShipmentDelivered)}
    loan_ids: set[str] = set()
    if barcodes:
        items = (await s.exec(select(Item).where(col(Item.barcode).in_(barcodes)))).all()
        known = uow.cache.setdefault("items", {})  # misses too: no query per unknown barcode
        known.update({b: None for b in barcodes})
        known.update({i.barcode: i for i in items})
        transfer_ids |= {i.open_transfer_id for i in items if i.open_transfer_id}
        loan_ids = {i.loan_id for i in items if i.loan_id}
    # Loaded rows stay in the session for the whole unit of work (see UnitOfWork), so the
    # handlers' `session.get` finds them without a query.
    if transfer_ids:
        await s.exec(select(Transfer).where(col(Transfer.transfer_id).in_(transfer_ids)))
    if loan_ids:
        await s.exec(select(Loan).where(col(Loan.loan_id).in_(loan_ids)))
    if any(isinstance(p, BranchCheckin) for _, p in events):
        rows = (await s.exec(select(Site).where(col(Site.floating_group).is_not(None)))).all()
        uow.cache["floating_groups"] = {r.code: r.floating_group for r in rows}


async def _get_item(uow: UnitOfWork, barcode: str) -> Item | None:
    """The item from the batch's prefetch, else from the database."""
    known: dict[str, Item | None] = uow.cache.setdefault("items", {})
    if barcode in known:
        return known[barcode]
    item = await uow.session.get(Item, barcode)
    known[barcode] = item
    return item


def _add_item(uow: UnitOfWork, item: Item) -> None:
    uow.session.add(item)
    uow.cache.setdefault("items", {})[item.barcode] = item


def _floating(uow: UnitOfWork, code: str | None) -> str | None:
    return uow.cache.get("floating_groups", {}).get(code) if code else None


def _record_anomaly(uow: UnitOfWork, env: Envelope, barcode: str, kind: str, detail: str) -> None:
    uow.session.add(Anomaly(barcode=barcode, kind=kind, detail=detail, event_id=env.id,
                            at=utcnow()))


def _status_changed(uow: UnitOfWork, env: Envelope, item: Item, before: tuple) -> None:
    """Tell the network when an item's status or whereabouts changed."""
    if (item.status, item.site) != before and item.site:
        uow.emit(
            "circulation.item_status_changed", item.barcode,
            ItemStatusChanged(barcode=item.barcode, bib_id=item.bib_id or "",
                              status=item.status, site=item.site,  # type: ignore[arg-type]
                              owning_branch=item.owning_branch or item.site),
            cause=env,
        )


def _request_transfer(uow: UnitOfWork, env: Envelope, item: Item, to_site: str, reason: str,
                      hold_id: str | None = None) -> Transfer:
    now = utcnow()
    transfer = Transfer(transfer_id=new_id(), barcode=item.barcode, from_site=item.site or "",
                        to_site=to_site, reason=reason, hold_id=hold_id, requested_at=now)
    uow.session.add(transfer)
    item.open_transfer_id = transfer.transfer_id
    uow.emit(
        "circulation.transfer_requested", item.barcode,
        TransferRequested(transfer_id=transfer.transfer_id, barcode=item.barcode,
                          from_site=transfer.from_site, to_site=to_site,
                          reason=reason, hold_id=hold_id, requested_at=now),  # type: ignore[arg-type]
        cause=env,
    )
    return transfer


def _close_transfer(uow: UnitOfWork, env: Envelope, transfer: Transfer, item: Item, *,
                    completed_at: str | None, cancel_reason: str | None = None) -> None:
    transfer.closed_at = utcnow()
    if item.open_transfer_id == transfer.transfer_id:
        item.open_transfer_id = None
    if cancel_reason is None:
        transfer.status = "completed"
        uow.emit("circulation.transfer_completed", item.barcode,
                 TransferCompleted(transfer_id=transfer.transfer_id, barcode=item.barcode,
                                   site=completed_at or transfer.to_site), cause=env)
    else:
        transfer.status = "cancelled"
        uow.emit("circulation.transfer_cancelled", item.barcode,
                 TransferCancelled(transfer_id=transfer.transfer_id, barcode=item.barcode,
                                   reason=cancel_reason), cause=env)


async def _item_for_fact(uow: UnitOfWork, env: Envelope, barcode: str, branch: str) -> Item:
    """The item a branch fact is about; an unknown barcode is kept, not refused."""
    item = await _get_item(uow, barcode)
    if item is None:
        item = Item(barcode=barcode, site=branch, status="available")
        _add_item(uow, item)
        _record_anomaly(uow, env, barcode, "unknown_item",
                        f"{env.type} at {branch} for a barcode circulation has not registered")
    return item


async def _close_loan(uow: UnitOfWork, item: Item, branch: str, at: datetime) -> str | None:
    if not item.loan_id:
        return None
    loan = await uow.session.get(Loan, item.loan_id)
    item.loan_id = None
    if loan is None or loan.returned_at is not None:
        return None
    loan.returned_at = at
    loan.returned_branch = branch
    return loan.loan_id


async def on_checkin(uow: UnitOfWork, env: Envelope, data: BranchCheckin) -> None:
    item = await _item_for_fact(uow, env, data.barcode, data.branch)
    before = (item.status, item.site)
    loan_id = await _close_loan(uow, item, data.branch, env.time)
    item.last_event_at = env.time
    if item.owning_branch is None:
        item.site, item.status = data.branch, "available"
        uow.emit("circulation.item_checked_in", item.barcode,
                 ItemCheckedIn(barcode=item.barcode, branch=data.branch, loan_id=loan_id,
                               disposition="reshelve"), cause=env)
        return
    transfer = None
    if item.open_transfer_id:
        transfer = await uow.session.get(Transfer, item.open_transfer_id)
    decision = domain.decide_checkin(
        branch=data.branch,
        owning_branch=item.owning_branch,
        open_transfer=domain.OpenTransfer(transfer.transfer_id, transfer.to_site)
        if transfer is not None else None,
        floating_group_here=_floating(uow, data.branch),
        floating_group_owner=_floating(uow, item.owning_branch),
    )
    item.site, item.status = decision.site, decision.status
    if transfer is not None and decision.complete_transfer:
        _close_transfer(uow, env, transfer, item, completed_at=data.branch)
    if transfer is not None and decision.cancel_transfer:
        _close_transfer(uow, env, transfer, item, completed_at=None,
                        cancel_reason=f"checked in at {data.branch}; re-routed")
    if decision.transfer_to:
        _request_transfer(uow, env, item, decision.transfer_to, decision.reason or "return_home")
    uow.emit("circulation.item_checked_in", item.barcode,
             ItemCheckedIn(barcode=item.barcode, branch=data.branch, loan_id=loan_id,
                           disposition=decision.disposition), cause=env)
    _status_changed(uow, env, item, before)


async def on_checkout(uow: UnitOfWork, env: Envelope, data: BranchCheckout) -> None:
    item = await _item_for_fact(uow, env, data.barcode, data.branch)
    before = (item.status, item.site)
    if item.loan_id:
        old = await _close_loan(uow, item, data.branch, env.time)
        if old:
            _record_anomaly(uow, env, item.barcode, "checkout_while_on_loan",
                            f"loan {old} closed by a new check-out at {data.branch}")
    if item.open_transfer_id:
        transfer = await uow.session.get(Transfer, item.open_transfer_id)
        if transfer is not None:
            _close_transfer(uow, env, transfer, item, completed_at=None,
                            cancel_reason=f"checked out at {data.branch}")
    loan = Loan(loan_id=new_id(), barcode=item.barcode, patron=data.patron, branch=data.branch,
                checked_out_at=env.time, due=domain.due_date(env.time.date(), data.due))
    uow.session.add(loan)
    item.loan_id, item.status, item.site = loan.loan_id, "on_loan", data.branch
    item.last_event_at = env.time
    uow.emit("circulation.item_checked_out", item.barcode,
             ItemCheckedOut(barcode=item.barcode, branch=data.branch, patron=data.patron,
                            loan_id=loan.loan_id, due=loan.due), cause=env)
    _status_changed(uow, env, item, before)


async def on_renewal(uow: UnitOfWork, env: Envelope, data: BranchRenewal) -> None:
    item = await _item_for_fact(uow, env, data.barcode, data.branch)
    loan = await uow.session.get(Loan, item.loan_id) if item.loan_id else None
    if loan is None:
        _record_anomaly(uow, env, item.barcode, "renewal_without_loan",
                        f"renewal at {data.branch} for an item not on loan")
        return
    loan.due = domain.due_date(env.time.date(), data.due)


async def on_item_missing(uow: UnitOfWork, env: Envelope, data: BranchItemMissing) -> None:
    item = await _item_for_fact(uow, env, data.barcode, data.branch)
    before = (item.status, item.site)
    item.status, item.site = "missing", data.branch
    _status_changed(uow, env, item, before)


async def on_item_cataloged(uow: UnitOfWork, env: Envelope, data: ItemCataloged) -> None:
    """Register a new copy and send it from processing to its owning branch."""
    item = await _get_item(uow, data.barcode)
    if item is not None and item.owning_branch is not None:
        item.bib_id, item.title, item.isbn = data.bib_id, data.title, data.isbn
        return  # already registered; a re-catalogue changes no whereabouts
    if item is None:
        item = Item(barcode=data.barcode, site=data.site)
        _add_item(uow, item)
    item.bib_id, item.isbn, item.title = data.bib_id, data.isbn, data.title
    item.owning_branch = data.owning_branch
    before = ("in_processing", None)
    status, destination = domain.placement_of_new_item(site=item.site or data.site,
                                                       owning_branch=data.owning_branch)
    item.status = status
    if destination:
        _request_transfer(uow, env, item, destination, "new_item")
    _status_changed(uow, env, item, before)


async def on_shipment_delivered(uow: UnitOfWork, env: Envelope, data: ShipmentDelivered) -> None:
    """Arrival completes the open transfer and makes the item available where it landed."""
    transfer = await uow.session.get(Transfer, data.transfer_id)
    item = await _get_item(uow, data.barcode)
    if transfer is not None and transfer.status == "completed" and transfer.to_site == data.site:
        return  # logistics confirming an arrival circulation already saw at the shelf
    if transfer is None or item is None or transfer.status != "open":
        _record_anomaly(uow, env, data.barcode, "delivery_without_open_transfer",
                        f"shipment {data.shipment_id} delivered for transfer {data.transfer_id}")
        return
    before = (item.status, item.site)
    item.site, item.status = data.site, "available"
    _close_transfer(uow, env, transfer, item, completed_at=data.site)
    _status_changed(uow, env, item, before)


async def on_site_upserted(uow: UnitOfWork, env: Envelope, data: SiteUpserted) -> None:
    await uow.session.merge(Site(code=data.code, name=data.name, kind=data.kind,
                                 floating_group=data.floating_group, active=data.active))


HANDLERS = {
    "branch.checkin": on_checkin,
    "branch.checkout": on_checkout,
    "branch.renewal": on_renewal,
    "branch.item_missing": on_item_missing,
    "cataloging.item_cataloged": on_item_cataloged,
    "logistics.shipment_delivered": on_shipment_delivered,
    "network.site_upserted": on_site_upserted,
}
