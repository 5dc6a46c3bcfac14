"""Circulation's use cases: each runs inside the caller's transaction (state + inbox + outbox).

A consumer hands a whole fetched batch to one unit of work; `prefetch` loads every item,
transfer, loan and site the batch touches in a few queries, so the per-event handlers
below find them in their repositories instead of asking the database one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from services.circulation import domain
from services.circulation.models import Anomaly, Item, Loan, Site, Transfer
from shared.contracts import Envelope, Event, new_id, utcnow
from shared.contracts.branch import BranchCheckin, BranchCheckout, BranchItemMissing, BranchRenewal
from shared.contracts.cataloging import ItemCataloged
from shared.contracts.circulation import (
    ItemCheckedIn,
    ItemCheckedOut,
    ItemStatusChanged,
    TransferCancelled,
    TransferCompleted,
    TransferRequested,
)
from shared.contracts.logistics import ShipmentDelivered, SiteUpserted
from shared.messaging.consumer import Handlers
from shared.messaging.unit_of_work import UnitOfWork

handlers = Handlers()


@handlers.before_batch
async def prefetch(uow: UnitOfWork, events: Sequence[tuple[Envelope, Event]]) -> None:
    items = uow.repo(Item)
    barcodes = {p.barcode for _, p in events if hasattr(p, "barcode")}
    transfer_ids = {p.transfer_id for _, p in events if isinstance(p, ShipmentDelivered)}
    loan_ids: set[str] = set()
    sites = {p.branch for _, p in events if isinstance(p, BranchCheckin)}
    if barcodes:
        # Locked in barcode order: a replica handling another topic's event for the same
        # item waits for this transaction instead of overwriting it (no lost update).
        await items.load(barcodes, lock=True)
        for barcode in barcodes:
            item = await items.get(barcode)
            if item is None:
                continue
            if item.open_transfer_id:
                transfer_ids.add(item.open_transfer_id)
            if item.loan_id:
                loan_ids.add(item.loan_id)
            if item.owning_branch and sites:
                sites.add(item.owning_branch)
    await uow.repo(Transfer).load(transfer_ids)
    await uow.repo(Loan).load(loan_ids)
    await uow.repo(Site).load(sites)


async def _floating(uow: UnitOfWork, code: str | None) -> str | None:
    site = await uow.repo(Site).get(code) if code else None
    return site.floating_group if site else None


def _record_anomaly(uow: UnitOfWork, env: Envelope, barcode: str, kind: str, detail: str) -> None:
    uow.repo(Anomaly).add(Anomaly(barcode=barcode, kind=kind, detail=detail, event_id=env.id,
                                  at=utcnow()))


def _status_changed(uow: UnitOfWork, env: Envelope, item: Item,
                    before: tuple[str, str | None]) -> None:
    """Tell the network when an item's status or whereabouts changed."""
    if (item.status, item.site) != before and item.site:
        uow.emit(
            ItemStatusChanged(barcode=item.barcode, bib_id=item.bib_id or "",
                              status=domain.item_status(item.status), site=item.site,
                              owning_branch=item.owning_branch or item.site),
            subject=item.barcode, cause=env,
        )


def _request_transfer(uow: UnitOfWork, env: Envelope, item: Item, to_site: str,
                      reason: domain.TransferReason, hold_id: str | None = None) -> Transfer:
    now = utcnow()
    transfer = Transfer(transfer_id=new_id(), barcode=item.barcode, from_site=item.site or "",
                        to_site=to_site, reason=reason, hold_id=hold_id, requested_at=now)
    uow.repo(Transfer).add(transfer)
    item.open_transfer_id = transfer.transfer_id
    uow.emit(
        TransferRequested(transfer_id=transfer.transfer_id, barcode=item.barcode,
                          from_site=transfer.from_site, to_site=to_site,
                          reason=reason, hold_id=hold_id, requested_at=now),
        subject=item.barcode, cause=env,
    )
    return transfer


def _close_transfer(uow: UnitOfWork, env: Envelope, transfer: Transfer, item: Item, *,
                    completed_at: str | None, cancel_reason: str | None = None) -> None:
    transfer.closed_at = utcnow()
    if item.open_transfer_id == transfer.transfer_id:
        item.open_transfer_id = None
    if cancel_reason is None:
        transfer.status = "completed"
        uow.emit(TransferCompleted(transfer_id=transfer.transfer_id, barcode=item.barcode,
                                   site=completed_at or transfer.to_site),
                 subject=item.barcode, cause=env)
    else:
        transfer.status = "cancelled"
        uow.emit(TransferCancelled(transfer_id=transfer.transfer_id, barcode=item.barcode,
                                   reason=cancel_reason),
                 subject=item.barcode, cause=env)


async def _item_for_fact(uow: UnitOfWork, env: Envelope, barcode: str, branch: str) -> Item:
    """The item a branch fact is about; an unknown barcode is kept, not refused."""
    item = await uow.repo(Item).get(barcode)
    if item is None:
        item = Item(barcode=barcode, site=branch, status="available")
        uow.repo(Item).add(item)
        _record_anomaly(uow, env, barcode, "unknown_item",
                        f"{env.type} at {branch} for a barcode circulation has not registered")
    return item


async def _close_loan(uow: UnitOfWork, item: Item, branch: str, at: datetime) -> str | None:
    if not item.loan_id:
        return None
    loan = await uow.repo(Loan).get(item.loan_id)
    item.loan_id = None
    if loan is None or loan.returned_at is not None:
        return None
    loan.returned_at = at
    loan.returned_branch = branch
    return loan.loan_id


async def _open_transfer(uow: UnitOfWork, item: Item) -> Transfer | None:
    return await uow.repo(Transfer).get(item.open_transfer_id) if item.open_transfer_id else None


@handlers.on(BranchCheckin)
async def on_checkin(uow: UnitOfWork, env: Envelope, data: BranchCheckin) -> None:
    item = await _item_for_fact(uow, env, data.barcode, data.branch)
    before = (item.status, item.site)
    loan_id = await _close_loan(uow, item, data.branch, env.time)
    item.last_event_at = env.time
    if item.owning_branch is None:
        item.site, item.status = data.branch, "available"
        uow.emit(ItemCheckedIn(barcode=item.barcode, branch=data.branch, loan_id=loan_id,
                               disposition="reshelve"), subject=item.barcode, cause=env)
        return
    transfer = await _open_transfer(uow, item)
    decision = domain.decide_checkin(
        branch=data.branch,
        owning_branch=item.owning_branch,
        open_transfer=domain.OpenTransfer(transfer.transfer_id, transfer.to_site)
        if transfer is not None else None,
        floating_group_here=await _floating(uow, data.branch),
        floating_group_owner=await _floating(uow, item.owning_branch),
    )
    item.site, item.status = decision.site, decision.status
    if transfer is not None and decision.complete_transfer:
        _close_transfer(uow, env, transfer, item, completed_at=data.branch)
    if transfer is not None and decision.cancel_transfer:
        _close_transfer(uow, env, transfer, item, completed_at=None,
                        cancel_reason=f"checked in at {data.branch}; re-routed")
    if decision.transfer_to:
        _request_transfer(uow, env, item, decision.transfer_to, decision.reason or "return_home")
    uow.emit(ItemCheckedIn(barcode=item.barcode, branch=data.branch, loan_id=loan_id,
                           disposition=decision.disposition), subject=item.barcode, cause=env)
    _status_changed(uow, env, item, before)


@handlers.on(BranchCheckout)
async def on_checkout(uow: UnitOfWork, env: Envelope, data: BranchCheckout) -> None:
    item = await _item_for_fact(uow, env, data.barcode, data.branch)
    before = (item.status, item.site)
    if item.loan_id:
        old = await _close_loan(uow, item, data.branch, env.time)
        if old:
            _record_anomaly(uow, env, item.barcode, "checkout_while_on_loan",
                            f"loan {old} closed by a new check-out at {data.branch}")
    transfer = await _open_transfer(uow, item)
    if transfer is not None:
        _close_transfer(uow, env, transfer, item, completed_at=None,
                        cancel_reason=f"checked out at {data.branch}")
    loan = Loan(loan_id=new_id(), barcode=item.barcode, patron=data.patron, branch=data.branch,
                checked_out_at=env.time, due=domain.due_date(env.time.date(), data.due))
    uow.repo(Loan).add(loan)
    item.loan_id, item.status, item.site = loan.loan_id, "on_loan", data.branch
    item.last_event_at = env.time
    uow.emit(ItemCheckedOut(barcode=item.barcode, branch=data.branch, patron=data.patron,
                            loan_id=loan.loan_id, due=loan.due), subject=item.barcode, cause=env)
    _status_changed(uow, env, item, before)


@handlers.on(BranchRenewal)
async def on_renewal(uow: UnitOfWork, env: Envelope, data: BranchRenewal) -> None:
    item = await _item_for_fact(uow, env, data.barcode, data.branch)
    loan = await uow.repo(Loan).get(item.loan_id) if item.loan_id else None
    if loan is None:
        _record_anomaly(uow, env, item.barcode, "renewal_without_loan",
                        f"renewal at {data.branch} for an item not on loan")
        return
    loan.due = domain.due_date(env.time.date(), data.due)


@handlers.on(BranchItemMissing)
async def on_item_missing(uow: UnitOfWork, env: Envelope, data: BranchItemMissing) -> None:
    item = await _item_for_fact(uow, env, data.barcode, data.branch)
    before = (item.status, item.site)
    item.status, item.site = "missing", data.branch
    _status_changed(uow, env, item, before)


@handlers.on(ItemCataloged)
async def on_item_cataloged(uow: UnitOfWork, env: Envelope, data: ItemCataloged) -> None:
    """Register a new copy and send it from processing to its owning branch."""
    item = await uow.repo(Item).get(data.barcode)
    if item is not None and item.owning_branch is not None:
        item.bib_id, item.title, item.isbn = data.bib_id, data.title, data.isbn
        return  # already registered; a re-catalogue changes no whereabouts
    if item is None:
        item = Item(barcode=data.barcode, site=data.site)
        uow.repo(Item).add(item)
    item.bib_id, item.isbn, item.title = data.bib_id, data.isbn, data.title
    item.owning_branch = data.owning_branch
    before: tuple[str, str | None] = ("in_processing", None)
    status, destination = domain.placement_of_new_item(site=item.site or data.site,
                                                       owning_branch=data.owning_branch)
    item.status = status
    if destination:
        _request_transfer(uow, env, item, destination, "new_item")
    _status_changed(uow, env, item, before)


@handlers.on(ShipmentDelivered)
async def on_shipment_delivered(uow: UnitOfWork, env: Envelope, data: ShipmentDelivered) -> None:
    """Arrival completes the open transfer and makes the item available where it landed."""
    transfer = await uow.repo(Transfer).get(data.transfer_id)
    item = await uow.repo(Item).get(data.barcode)
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


@handlers.on(SiteUpserted)
async def on_site_upserted(uow: UnitOfWork, env: Envelope, data: SiteUpserted) -> None:
    await uow.repo(Site).put(Site(code=data.code, name=data.name, kind=data.kind,
                                  floating_group=data.floating_group, active=data.active))
