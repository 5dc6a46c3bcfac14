"""Circulation's use cases: each runs inside the caller's transaction (state + inbox + outbox).

A consumer hands a whole fetched batch to one unit of work; `prefetch` loads every item,
transfer, loan and site the batch touches in a few queries, so the per-event handlers
below find them in their repositories instead of asking the database one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import isbnlib
from sqlmodel import col, or_, select

from services.circulation import domain
from services.circulation.models import (
    Anomaly,
    Hold,
    Item,
    Loan,
    LoanPolicyRow,
    OrderedLine,
    RouteVisit,
    Site,
    Title,
    Transfer,
)
from shared.contracts import Envelope, Event, new_id, utcnow
from shared.contracts.acquisition import OrderCancelled, OrderOpened
from shared.contracts.branch import (
    BranchCheckin,
    BranchCheckout,
    BranchHoldCancelled,
    BranchHoldRequested,
    BranchItemMissing,
    BranchRenewal,
)
from shared.contracts.cataloging import ItemCataloged, ItemWithdrawn
from shared.contracts.circulation import (
    HoldClosed,
    HoldPlaced,
    HoldReady,
    ItemCheckedIn,
    ItemCheckedOut,
    ItemStatusChanged,
    TransferCancelled,
    TransferCompleted,
    TransferLate,
    TransferRequested,
)
from shared.contracts.logistics import RoutePlanned, ShipmentDelivered, SiteUpserted
from shared.errors import Conflict, Invalid, NotFound
from shared.messaging.consumer import Handlers
from shared.messaging.unit_of_work import SqlUnitOfWork, UnitOfWork
from shared.service import metrics

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
    new_copies = [p for _, p in events if isinstance(p, ItemCataloged)]
    ordered = [ln for _, p in events if isinstance(p, OrderOpened) for ln in p.lines]
    cancelled = {i for _, p in events if isinstance(p, OrderCancelled) for i in p.line_ids}
    await uow.repo(OrderedLine).load({ln.line_id for ln in ordered} | cancelled)
    cancelled_isbns = set()
    for line_id in cancelled:
        if (line := await uow.repo(OrderedLine).get(line_id)) is not None:
            cancelled_isbns.add(line.isbn)
    # Locked: copies on order are counted up by order events and down by new items, which
    # two replicas may handle at once (different partitions); the lock makes them take turns.
    await uow.repo(Title).load({p.isbn for p in new_copies if p.isbn}
                               | {i for ln in ordered if (i := isbn13(ln.isbn))}
                               | cancelled_isbns, lock=True)
    await _prefetch_waiting_titles(uow, barcodes, new_copies)


class _WaitingTitles:
    """Which of a batch's titles have a hold waiting (one query per batch), so a check-in
    of a title nobody waits for asks nothing more."""

    def __init__(self) -> None:
        self.keys: set[str] = set()  # titles of `barcodes` with a hold waiting
        self.barcodes: set[str] = set()  # the items the batch's prefetch looked at
        self.changed = False  # a hold was placed or put back in line in this batch: ask


async def _prefetch_waiting_titles(uow: UnitOfWork, barcodes: set[str],
                                   new_copies: Sequence[ItemCataloged] = ()) -> None:
    if not barcodes or not isinstance(uow, SqlUnitOfWork):
        return
    keys: set[str] = set()
    looked: set[str] = set()
    for barcode in barcodes:
        item = await uow.repo(Item).get(barcode)
        if item is not None and item.owning_branch is not None:  # a known, catalogued copy
            keys.update(_item_keys(item))
            looked.add(barcode)
    for copy in new_copies:  # a copy being catalogued takes its title from the event
        keys.update(_title_keys(copy.bib_id, copy.isbn))
        looked.add(copy.barcode)
    found = set((await uow.session.exec(select(Hold.title_key).where(
        col(Hold.title_key).in_(keys), col(Hold.status) == "waiting").distinct())).all()
    ) if keys else set()
    known = uow.local(_WaitingTitles, _WaitingTitles)
    known.keys, known.barcodes = found, looked


async def _floating(uow: UnitOfWork, code: str | None) -> str | None:
    site = await uow.repo(Site).get(code) if code else None
    return site.floating_group if site else None


def _record_anomaly(uow: UnitOfWork, env: Envelope, barcode: str, kind: str, detail: str) -> None:
    """A fact that contradicts what circulation believed, kept for the branch's staff."""
    site = env.source.removeprefix("branch/") if env.source.startswith("branch/") else None
    uow.repo(Anomaly).add(Anomaly(barcode=barcode, kind=kind, detail=detail, event_id=env.id,
                                  at=utcnow(), site=site))


def _status_changed(uow: UnitOfWork, env: Envelope | None, item: Item,
                    before: tuple[str, str | None]) -> None:
    """Tell the network when an item's status or whereabouts changed."""
    if (item.status, item.site) != before and item.site:
        uow.emit(
            ItemStatusChanged(barcode=item.barcode, bib_id=item.bib_id or "",
                              status=domain.item_status(item.status), site=item.site,
                              owning_branch=item.owning_branch or item.site),
            subject=item.barcode, cause=env,
        )


def _request_transfer(uow: UnitOfWork, env: Envelope | None, item: Item, to_site: str,
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


def _close_transfer(uow: UnitOfWork, env: Envelope | None, transfer: Transfer, item: Item, *,
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


def _is_late(item: Item, env: Envelope) -> bool:
    """A fact older than one already applied to the item (an offline batch sent late)."""
    return item.last_event_at is not None and env.time < item.last_event_at


@handlers.on(BranchCheckin)
async def on_checkin(uow: UnitOfWork, env: Envelope, data: BranchCheckin) -> None:
    item = await _item_for_fact(uow, env, data.barcode, data.branch)
    if _is_late(item, env):
        await _late_checkin(uow, env, item, data)
        return
    before = (item.status, item.site)
    loan_id = await _close_loan(uow, item, data.branch, env.time)
    if loan_id is None and item.status == "available" and item.site != data.branch \
            and item.owning_branch is not None:
        # Believed on the shelf elsewhere, returned here by no reader: handled all the
        # same (it goes home), and shown to staff. A re-scan where it stands is no news.
        _record_anomaly(uow, env, item.barcode, "checkin_without_loan",
                        f"checked in at {data.branch} while available at {item.site}, "
                        "not on loan")
    item.last_event_at = env.time
    if item.owning_branch is None:
        item.site, item.status = data.branch, "available"
        uow.emit(ItemCheckedIn(barcode=item.barcode, branch=data.branch, loan_id=loan_id,
                               disposition="reshelve"), subject=item.barcode, cause=env)
        return
    transfer = await _open_transfer(uow, item)
    serving = await _hold_of(uow, item)
    if item.status == "on_hold_shelf" and serving is not None and transfer is None:
        # Checked in again while waiting on the shelf (a desk scanning the shelf): no change.
        uow.emit(ItemCheckedIn(barcode=item.barcode, branch=data.branch, loan_id=loan_id,
                               disposition="hold_shelf"), subject=item.barcode, cause=env)
        return
    here = elsewhere = None
    if transfer is None and serving is None:
        first = await _first_waiting(uow, item)
        if first is not None:
            waiting = domain.WaitingHold(first.hold_id, first.pickup_branch)
            here, elsewhere = (waiting, None) if first.pickup_branch == data.branch else (
                None, waiting)
    decision = domain.decide_checkin(
        branch=data.branch,
        owning_branch=item.owning_branch,
        open_transfer=domain.OpenTransfer(transfer.transfer_id, transfer.to_site)
        if transfer is not None else None,
        floating_group_here=await _floating(uow, data.branch),
        floating_group_owner=await _floating(uow, item.owning_branch),
        hold_here=here, hold_elsewhere=elsewhere,
        transfer_hold=domain.WaitingHold(serving.hold_id, serving.pickup_branch)
        if serving is not None and transfer is not None else None,
    )
    item.site, item.status = decision.site, decision.status
    if transfer is not None and decision.complete_transfer:
        _close_transfer(uow, env, transfer, item, completed_at=data.branch)
    if transfer is not None and decision.cancel_transfer:
        _close_transfer(uow, env, transfer, item, completed_at=None,
                        cancel_reason=f"checked in at {data.branch}; re-routed")
    hold = await uow.repo(Hold).get(decision.hold_id) if decision.hold_id else None
    if decision.transfer_to:
        _request_transfer(uow, env, item, decision.transfer_to, decision.reason or "return_home",
                          hold_id=hold.hold_id if hold is not None else None)
        if hold is not None:
            _assign(item, hold, "in_transit")
    elif hold is not None and decision.disposition == "hold_shelf":
        _on_shelf(uow, env, item, hold)
    elif decision.complete_transfer and decision.status == "available":
        # Home (or where it was sent) at last: a reader who began waiting while it
        # travelled comes first.
        await _offer_to_waiting(uow, env, item)
    uow.emit(ItemCheckedIn(barcode=item.barcode, branch=data.branch, loan_id=loan_id,
                           disposition=decision.disposition), subject=item.barcode, cause=env)
    _status_changed(uow, env, item, before)


@handlers.on(BranchCheckout)
async def on_checkout(uow: UnitOfWork, env: Envelope, data: BranchCheckout) -> None:
    item = await _item_for_fact(uow, env, data.barcode, data.branch)
    if _is_late(item, env):
        await _late_checkout(uow, env, item, data)
        return
    before = (item.status, item.site)
    if item.loan_id:
        old = await _close_loan(uow, item, data.branch, env.time)
        if old:
            _record_anomaly(uow, env, item.barcode, "checkout_while_on_loan",
                            f"loan {old} closed by a new check-out at {data.branch}")
    serving = await _hold_of(uow, item)
    released: Hold | None = None
    if serving is not None:
        if serving.patron == data.patron and serving.status == "ready":
            _close_hold(uow, env, serving, "fulfilled", item)
        else:
            # Another reader took the copy meant for this hold: the hold waits again.
            _record_anomaly(uow, env, item.barcode, "checkout_of_held_item",
                            f"checked out at {data.branch} while serving hold "
                            f"{serving.hold_id} ({serving.status})")
            released = serving
    transfer = await _open_transfer(uow, item)
    if transfer is not None:
        if transfer.from_site != data.branch:
            _record_anomaly(uow, env, item.barcode, "checkout_in_transit",
                            f"checked out at {data.branch} while on its way from "
                            f"{transfer.from_site} to {transfer.to_site}")
        _close_transfer(uow, env, transfer, item, completed_at=None,
                        cancel_reason=f"checked out at {data.branch}")
    if released is not None:
        await _release(uow, env, item, released)
    policy = await _policy(uow, data.branch, item)
    loan = Loan(loan_id=new_id(), barcode=item.barcode, patron=data.patron, branch=data.branch,
                checked_out_at=env.time,
                due=domain.due_date(env.time.date(), data.due, policy.loan_days))
    await _check_loan_limit(uow, env, data, policy)
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
    if loan is not None and env.time < loan.checked_out_at:
        loan = None  # a renewal older than the current loan renews nothing that still runs
    if loan is None and _is_late(item, env):
        _record_anomaly(uow, env, item.barcode, "late_renewal",
                        f"renewal at {data.branch} dated {env.time.isoformat()} arrived after "
                        "the loan it renewed had ended")
        return
    if loan is None:
        _record_anomaly(uow, env, item.barcode, "renewal_without_loan",
                        f"renewal at {data.branch} for an item not on loan")
        return
    policy = await _policy(uow, loan.branch, item)
    loan.renewals += 1
    if loan.renewals > policy.renewals:
        # The desk renewed it (a fact): kept, and shown to staff.
        _record_anomaly(uow, env, item.barcode, "renewal_over_limit",
                        f"renewal {loan.renewals} at {data.branch}; the policy allows "
                        f"{policy.renewals}")
    loan.due = domain.due_date(env.time.date(), data.due, policy.loan_days)


class _Policies(list[domain.LoanPolicy]):
    """The loan policies, read once per unit of work (a batch)."""

    loaded = False


async def _policy(uow: UnitOfWork, branch: str, item: Item) -> domain.LoanPolicy:
    book = uow.local(_Policies, _Policies)
    if not book.loaded and isinstance(uow, SqlUnitOfWork):
        rows = (await uow.session.exec(select(LoanPolicyRow))).all()
        book.extend(domain.LoanPolicy(r.scope, r.item_type, r.loan_days, r.renewals,
                                      r.max_items) for r in rows)
        book.loaded = True
    settings = uow.settings
    default = domain.LoanPolicy("*", "*", settings.loan_days, settings.loan_renewals,
                                settings.loan_max_items)
    return domain.choose_policy(list(book), site=branch, group=await _floating(uow, branch),
                                item_type=item.item_type, default=default)


async def _check_loan_limit(uow: UnitOfWork, env: Envelope, data: BranchCheckout,
                            policy: domain.LoanPolicy) -> None:
    """Over the reader's limit of items: the book already left the shelf, so the loan
    stands and staff see an anomaly."""
    if not isinstance(uow, SqlUnitOfWork):
        return
    open_loans = len((await uow.session.exec(select(Loan.loan_id).where(
        col(Loan.patron) == data.patron, col(Loan.returned_at).is_(None)))).all())
    if open_loans >= policy.max_items:
        _record_anomaly(uow, env, data.barcode, "over_loan_limit",
                        f"reader now has {open_loans + 1} items; the policy at {data.branch} "
                        f"allows {policy.max_items}")


@handlers.on(BranchItemMissing)
async def on_item_missing(uow: UnitOfWork, env: Envelope, data: BranchItemMissing) -> None:
    item = await _item_for_fact(uow, env, data.barcode, data.branch)
    if _is_late(item, env):
        _record_anomaly(uow, env, item.barcode, "late_missing",
                        f"reported missing at {data.branch} at {env.time.isoformat()}, but "
                        "the item was seen since: kept as it is")
        return
    item.last_event_at = env.time
    before = (item.status, item.site)
    transfer = await _open_transfer(uow, item)
    if transfer is not None:
        _close_transfer(uow, env, transfer, item, completed_at=None,
                        cancel_reason=f"missing at {data.branch}")
    serving = await _hold_of(uow, item)
    if serving is not None:
        await _release(uow, env, item, serving)
    item.status, item.site = "missing", data.branch
    _status_changed(uow, env, item, before)


@handlers.on(ItemWithdrawn)
async def on_item_withdrawn(uow: UnitOfWork, env: Envelope, data: ItemWithdrawn) -> None:
    """A withdrawn copy leaves circulation: its transfer is cancelled, a reader it was
    meant for gets another copy (or waits on), and it is never chosen again."""
    item = await uow.repo(Item).get(data.barcode)
    if item is None or item.status == "withdrawn":
        return
    before = (item.status, item.site)
    transfer = await _open_transfer(uow, item)
    if transfer is not None:
        _close_transfer(uow, env, transfer, item, completed_at=None,
                        cancel_reason=f"withdrawn: {data.reason}")
    serving = await _hold_of(uow, item)
    if serving is not None:
        await _release(uow, env, item, serving)
    item.status = "withdrawn"
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
    item.item_type = data.item_type
    item.owning_branch = data.owning_branch
    before: tuple[str, str | None] = ("in_processing", None)
    status, destination = domain.placement_of_new_item(site=item.site or data.site,
                                                       owning_branch=data.owning_branch)
    item.status = status
    title = await uow.repo(Title).get(item.isbn) if item.isbn else None
    if title is not None and title.on_order > 0:
        title.on_order -= 1
    first = await _first_waiting(uow, item)
    if first is not None:  # a reader is waiting for this title: the new copy goes to them
        if first.pickup_branch == item.site:
            item.status = "on_hold_shelf"
            _on_shelf(uow, env, item, first)
        else:
            item.status = "in_transit"
            _request_transfer(uow, env, item, first.pickup_branch, "hold", hold_id=first.hold_id)
            _assign(item, first, "in_transit")
    elif destination:
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
    hold = await uow.repo(Hold).get(transfer.hold_id) if transfer.hold_id else None
    if hold is not None and hold.status == "in_transit" and hold.pickup_branch == data.site:
        item.status = "on_hold_shelf"
        _on_shelf(uow, env, item, hold)
    else:
        await _offer_to_waiting(uow, env, item)
    _status_changed(uow, env, item, before)


@handlers.on(SiteUpserted)
async def on_site_upserted(uow: UnitOfWork, env: Envelope, data: SiteUpserted) -> None:
    await uow.repo(Site).put(Site(code=data.code, name=data.name, kind=data.kind,
                                  floating_group=data.floating_group, active=data.active,
                                  hub=data.hub, lat=data.lat, lon=data.lon))


@handlers.on(RoutePlanned)
async def on_route_planned(uow: UnitOfWork, env: Envelope, data: RoutePlanned) -> None:
    """Keep where planned routes go: a copy a route takes straight to a pickup is cheapest."""
    await uow.repo(RouteVisit).put(RouteVisit(route_id=data.route_id, date=data.date,
                                              sites=[s.site for s in data.stops]))


@handlers.on(OrderOpened)
async def on_order_opened(uow: UnitOfWork, env: Envelope, data: OrderOpened) -> None:
    """Copies on order count for 'this title will come': a hold may wait for them."""
    for line in data.lines:
        isbn = isbn13(line.isbn)
        if isbn is None or await uow.repo(OrderedLine).get(line.line_id) is not None:
            continue
        uow.repo(OrderedLine).add(OrderedLine(line_id=line.line_id, isbn=isbn,
                                              outstanding=line.quantity))
        title = await uow.repo(Title).get(isbn)
        if title is None:
            uow.repo(Title).add(Title(isbn=isbn, on_order=line.quantity))
        else:
            title.on_order += line.quantity


@handlers.on(OrderCancelled)
async def on_order_cancelled(uow: UnitOfWork, env: Envelope, data: OrderCancelled) -> None:
    """Cancelled copies will not come: they no longer count for their title."""
    copies = {c.line_id: c.copies for c in data.lines}
    for line_id in data.line_ids:
        line = await uow.repo(OrderedLine).get(line_id)
        if line is None:
            continue
        gone = min(line.outstanding, copies.get(line_id, line.outstanding))
        line.outstanding -= gone
        title = await uow.repo(Title).get(line.isbn)
        if title is not None:
            title.on_order = max(0, title.on_order - gone)


# --- facts that arrive late ----------------------------------------------------------------


async def _late_checkout(uow: UnitOfWork, env: Envelope, item: Item,
                         data: BranchCheckout) -> None:
    """A check-out older than what was already applied (a kiosk's offline batch).

    It is put where it belongs in time, never applied on top: the loan running then (if
    any) ends at this check-out, as live delivery would have ended it (an anomaly, as
    live); the new loan ends where the next fact already applied ended it (a later
    check-out, or the check-in that returned the loan running then). When nothing later
    ended it, it is the item's current loan, exactly as live delivery would leave it.
    """
    running = await _loan_at(uow, item.barcode, env.time)
    later = await _loans_after(uow, item.barcode, env.time)
    ends: list[datetime] = [later[0].checked_out_at] if later else []
    if running is not None and running.returned_at is not None \
            and running.returned_at > env.time:
        ends.append(running.returned_at)
    current = (running is not None and running.loan_id == item.loan_id
               and running.returned_at is None)
    if not ends and not current and item.last_event_at is not None:
        ends.append(item.last_event_at)  # returned by the later fact (a check-in)
    loan = Loan(loan_id=new_id(), barcode=item.barcode, patron=data.patron,
                branch=data.branch, checked_out_at=env.time,
                due=domain.due_date(env.time.date(), data.due),
                returned_at=min(ends) if ends else None)
    uow.repo(Loan).add(loan)
    if running is not None and (running.returned_at is None or running.returned_at > env.time):
        was_current = current
        running.returned_at, running.returned_branch = env.time, data.branch
        _record_anomaly(uow, env, item.barcode, "checkout_while_on_loan",
                        f"loan {running.loan_id} closed by a check-out at {data.branch} "
                        f"dated {env.time.isoformat()} (arrived late)")
        if was_current and not ends:
            before = (item.status, item.site)
            item.loan_id, item.status, item.site = loan.loan_id, "on_loan", data.branch
            uow.emit(ItemCheckedOut(barcode=item.barcode, branch=data.branch,
                                    patron=data.patron, loan_id=loan.loan_id, due=loan.due),
                     subject=item.barcode, cause=env)
            _status_changed(uow, env, item, before)


async def _late_checkin(uow: UnitOfWork, env: Envelope, item: Item,
                        data: BranchCheckin) -> None:
    """A check-in older than what was already applied: it returned the loan that was
    running then (if a later check-out closed that loan, the return time is corrected);
    where the item is now is decided by the later facts, so nothing else changes."""
    running = await _loan_at(uow, item.barcode, env.time)
    if running is not None and (running.returned_at is None or running.returned_at > env.time):
        if running.loan_id == item.loan_id:
            # The loan still open was started before this check-in: a late return that
            # the later facts did not see. Applying it would move the item now; instead
            # the item is reported for staff, since the shelf and the record disagree.
            _record_anomaly(uow, env, item.barcode, "late_checkin",
                            f"check-in at {data.branch} ({env.time.isoformat()}) arrived "
                            f"after later facts while loan {running.loan_id} is still open")
            return
        running.returned_at, running.returned_branch = env.time, data.branch


async def _loans_after(uow: UnitOfWork, barcode: str, at: datetime) -> list[Loan]:
    if not isinstance(uow, SqlUnitOfWork):
        return []
    rows = await uow.session.exec(select(Loan).where(
        col(Loan.barcode) == barcode, col(Loan.checked_out_at) > at)
        .order_by(col(Loan.checked_out_at)))
    return list(rows)


async def _loan_at(uow: UnitOfWork, barcode: str, at: datetime) -> Loan | None:
    """The loan of `barcode` that had started by `at` (the latest such)."""
    if not isinstance(uow, SqlUnitOfWork):
        return None
    return (await uow.session.exec(select(Loan).where(
        col(Loan.barcode) == barcode, col(Loan.checked_out_at) <= at)
        .order_by(col(Loan.checked_out_at).desc()).limit(1))).first()


# --- holds ----------------------------------------------------------------------------------


def isbn13(value: str | None) -> str | None:
    """An ISBN-10 or -13 as ISBN-13 digits; None when it is not a valid ISBN."""
    if not value:
        return None
    code: str = isbnlib.canonical(value)
    if isbnlib.is_isbn10(code):
        code = isbnlib.to_isbn13(code)
    return code if isbnlib.is_isbn13(code) else None


def title_key(bib_id: str | None, isbn: str | None) -> str:
    return f"bib:{bib_id}" if bib_id else f"isbn:{isbn}"


def _item_keys(item: Item) -> list[str]:
    return _title_keys(item.bib_id, item.isbn)


def _title_keys(bib_id: str | None, isbn: str | None) -> list[str]:
    """The keys a hold on this title is placed under: by bib, and by ISBN-13."""
    keys = []
    if bib_id:
        keys.append(f"bib:{bib_id}")
    number = isbn13(isbn)
    if number:
        keys.append(f"isbn:{number}")
    return keys


async def _hold_of(uow: UnitOfWork, item: Item) -> Hold | None:
    hold = await uow.repo(Hold).get(item.hold_id) if item.hold_id else None
    return hold if hold is not None and hold.status in domain.ACTIVE_HOLD_STATUSES else None


async def _first_waiting(uow: UnitOfWork, item: Item) -> Hold | None:
    """The oldest hold waiting for this copy's title (by bib or by ISBN), if any."""
    keys = _item_keys(item)
    if not keys or not isinstance(uow, SqlUnitOfWork):
        return None
    known = uow.local(_WaitingTitles, _WaitingTitles)
    if item.barcode in known.barcodes and not known.changed and not known.keys & set(keys):
        return None
    row = (await uow.session.exec(
        select(Hold).where(col(Hold.title_key).in_(keys), col(Hold.status) == "waiting")
        .order_by(col(Hold.placed_at), col(Hold.hold_id)).limit(1).with_for_update()
    )).first()
    if row is None:
        return None
    return await uow.repo(Hold).get(row.hold_id) or row


def _assign(item: Item, hold: Hold, status: str) -> None:
    item.hold_id, hold.barcode, hold.status = hold.hold_id, item.barcode, status


def _on_shelf(uow: UnitOfWork, env: Envelope | None, item: Item, hold: Hold) -> None:
    """The copy waits for its reader on the pickup branch's hold shelf until it expires."""
    _assign(item, hold, "ready")
    at = env.time if env is not None else utcnow()
    today = _local_day(uow, at)
    hold.ready_at = at
    hold.expires_on = domain.hold_expires_on(today, uow.settings.hold_shelf_days)
    uow.emit(HoldReady(hold_id=hold.hold_id, barcode=item.barcode,
                       pickup_branch=hold.pickup_branch, expires_on=hold.expires_on),
             subject=hold.hold_id, cause=env)


def _local_day(uow: UnitOfWork, at: datetime) -> date:
    return at.astimezone(ZoneInfo(uow.settings.timezone)).date()


def _close_hold(uow: UnitOfWork, env: Envelope | None, hold: Hold,
                outcome: Literal["fulfilled", "cancelled", "expired"],
                item: Item | None) -> None:
    hold.status, hold.outcome, hold.closed_at = outcome, outcome, utcnow()
    if item is not None and item.hold_id == hold.hold_id:
        item.hold_id = None
    uow.emit(HoldClosed(hold_id=hold.hold_id, outcome=outcome), subject=hold.hold_id,
             cause=env)


class HoldRefused(Conflict):
    """A hold the rules refuse (over the reader's limit); nothing is recorded."""


async def place_hold(uow: SqlUnitOfWork, env: Envelope | None, *, patron: str, pickup: str,
                     bib_id: str | None, isbn: str | None, hold_id: str | None,
                     at: datetime) -> Hold:
    """Place a hold and fill it at once when a copy is free: on the shelf at the pickup
    branch first (it goes on the hold shelf), else the copy cheapest to move (a transfer,
    reason `hold`). Else it waits in line for the next copy checked in or catalogued.

    Refused: an unknown pickup branch, a title with no copy and none on order, a reader
    over the limit of active holds. A hold id sent again returns the hold as it is.
    """
    if hold_id:
        existing = await uow.repo(Hold).get(hold_id)
        if existing is not None:
            return existing
    if await uow.repo(Site).get(pickup) is None:
        raise Invalid(f"unknown pickup branch {pickup!r}", field="pickup_branch",
                      kind="unknown_site")
    given = isbn
    isbn = isbn13(isbn) if isbn else None
    if given and isbn is None and not bib_id:
        raise Invalid(f"{given!r} is not a valid ISBN-10 or ISBN-13", field="isbn",
                      kind="invalid_isbn")
    key_bib = bib_id
    if key_bib is None and isbn is not None:
        key_bib = (await uow.session.exec(select(Item.bib_id).where(
            col(Item.isbn).in_(_isbn_forms(isbn)), col(Item.bib_id).is_not(None)).limit(1))
        ).first()
    known = (await uow.session.exec(select(Item.barcode).where(
        or_(col(Item.bib_id) == key_bib, col(Item.isbn).in_(_isbn_forms(isbn)))
        if key_bib else col(Item.isbn).in_(_isbn_forms(isbn))).limit(1))).first()
    ordered = await uow.repo(Title).get(isbn) if isbn else None
    if known is None and (ordered is None or ordered.on_order <= 0):
        raise Invalid("no copy of this title is in the network or on order",
                      field="bib_id" if bib_id else "isbn", kind="unknown_title")
    active = len((await uow.session.exec(select(Hold.hold_id).where(
        col(Hold.patron) == patron,
        col(Hold.status).in_(domain.ACTIVE_HOLD_STATUSES)))).all())
    limit = uow.settings.holds_per_patron
    if active >= limit:
        raise HoldRefused(f"reader {patron} already has {active} active holds; the limit is "
                          f"{limit}")
    hold = Hold(hold_id=hold_id or new_id(), patron=patron,
                title_key=title_key(key_bib, isbn), bib_id=key_bib, isbn=isbn,
                pickup_branch=pickup, placed_at=at)
    uow.repo(Hold).add(hold)
    uow.local(_WaitingTitles, _WaitingTitles).changed = True
    uow.emit(HoldPlaced(hold_id=hold.hold_id, patron=patron,
                        bib_id=key_bib or f"isbn:{isbn}", pickup_branch=pickup),
             subject=hold.hold_id, cause=env)
    await _fill(uow, env, hold)
    return hold


def _isbn_forms(isbn: str | None) -> list[str]:
    """The ways an ISBN may be stored on an item: as ISBN-13, and as the ISBN-10 it
    came from."""
    if not isbn:
        return []
    forms = [isbn]
    ten = isbnlib.to_isbn10(isbn)
    if ten:
        forms.append(ten)
    return forms


async def _fill(uow: SqlUnitOfWork, env: Envelope | None, hold: Hold) -> None:
    """Give a waiting hold a free copy if there is one (never one on loan, moving for
    another hold, or missing)."""
    title = [col(Item.bib_id) == hold.bib_id] if hold.bib_id else []
    title.append(col(Item.isbn).in_(_isbn_forms(hold.isbn)))
    rows = (await uow.session.exec(
        select(Item).where(or_(*title), col(Item.status) == "available",
                           col(Item.hold_id).is_(None), col(Item.open_transfer_id).is_(None))
        .order_by(col(Item.barcode)).with_for_update())).all()
    if not rows:
        return
    sites = {s.code: s for s in (await uow.session.exec(select(Site))).all()}
    today = _local_day(uow, utcnow())
    routes = (await uow.session.exec(select(RouteVisit).where(
        col(RouteVisit.date) >= today, col(RouteVisit.date) <= today + timedelta(days=2)))).all()

    def on_a_route(origin: str, pickup: str) -> bool:
        return any(origin in r.sites and pickup in r.sites[r.sites.index(origin) + 1:]
                   for r in routes)

    def cost(origin: str, pickup: str) -> tuple[int, float]:
        return domain.move_cost(_network(sites.get(origin)), _network(sites.get(pickup)),
                                on_a_route(origin, pickup))

    chosen = domain.choose_copy(hold.pickup_branch,
                                [domain.Candidate(i.barcode, i.site or "") for i in rows], cost)
    if chosen is None:
        return
    item = next(i for i in rows if i.barcode == chosen.barcode)
    item = await uow.repo(Item).get(item.barcode) or item
    before = (item.status, item.site)
    cause = env
    if item.site == hold.pickup_branch:
        item.status = "on_hold_shelf"
        _on_shelf(uow, cause, item, hold)
    else:
        item.status = "in_transit"
        _request_transfer(uow, cause, item, hold.pickup_branch, "hold", hold_id=hold.hold_id)
        _assign(item, hold, "in_transit")
    _status_changed(uow, cause, item, before)


def _network(site: Site | None) -> domain.NetworkSite | None:
    return domain.NetworkSite(site.code, site.hub, site.lat, site.lon) if site else None


async def cancel_hold(uow: SqlUnitOfWork, env: Envelope | None, hold_id: str, *,
                      patron: str | None = None,
                      outcome: Literal["cancelled", "expired"] = "cancelled") -> Hold:
    """Cancel (or expire) a hold at any stage. Its copy goes to the next hold in line for
    the title, or home: a transfer under way is re-routed from where the copy was."""
    hold = await uow.session.get(Hold, hold_id, with_for_update=True)
    if hold is None:
        raise NotFound(f"no hold {hold_id!r}")
    if patron is not None and hold.patron != patron:
        raise Invalid(f"hold {hold_id} is not reader {patron}'s", field="patron",
                      kind="wrong_patron")
    if hold.status not in domain.ACTIVE_HOLD_STATUSES:
        return hold
    item = await uow.repo(Item).get(hold.barcode) if hold.barcode else None
    cause = env
    _close_hold(uow, cause, hold, outcome, item)
    if item is None:
        return hold
    before = (item.status, item.site)
    transfer = await _open_transfer(uow, item)
    if transfer is not None:
        _close_transfer(uow, cause, transfer, item, completed_at=None,
                        cancel_reason=f"hold {hold.hold_id} {outcome}")
    await _send_on(uow, cause, item)
    _status_changed(uow, cause, item, before)
    return hold


async def _send_on(uow: SqlUnitOfWork, env: Envelope | None, item: Item) -> None:
    """A copy freed from a hold: the next hold in line, else home (or stays if home)."""
    nxt = await _first_waiting(uow, item)
    here = item.site or ""
    if nxt is not None and nxt.pickup_branch == here:
        item.status = "on_hold_shelf"
        _on_shelf(uow, env, item, nxt)
    elif nxt is not None:
        item.status = "in_transit"
        _request_transfer(uow, env, item, nxt.pickup_branch, "hold", hold_id=nxt.hold_id)
        _assign(item, nxt, "in_transit")
    elif item.owning_branch and item.owning_branch != here:
        item.status = "in_transit"
        _request_transfer(uow, env, item, item.owning_branch, "return_home")
    else:
        item.status = "available"


async def _offer_to_waiting(uow: UnitOfWork, env: Envelope | None, item: Item) -> None:
    """A copy that just became free goes to the first reader waiting for its title."""
    if item.status != "available" or not isinstance(uow, SqlUnitOfWork):
        return
    if await _first_waiting(uow, item) is not None:
        await _send_on(uow, env, item)


async def _release(uow: UnitOfWork, env: Envelope | None, item: Item, hold: Hold) -> None:
    """The copy serving `hold` is gone (another reader has it, or it is missing): the
    hold waits again, first in line by when it was placed, and takes a free copy if one
    stands anywhere."""
    hold.status, hold.barcode, hold.ready_at, hold.expires_on = "waiting", None, None, None
    item.hold_id = None
    uow.local(_WaitingTitles, _WaitingTitles).changed = True
    if isinstance(uow, SqlUnitOfWork):
        await _fill(uow, env, hold)


async def expire_holds(uow: SqlUnitOfWork, today: date) -> int:
    """Holds uncollected past their last day on the shelf expire; their copies move on."""
    due = (await uow.session.exec(select(Hold.hold_id).where(
        col(Hold.status) == "ready", col(Hold.expires_on) < today)
        .order_by(col(Hold.hold_id)))).all()
    for hold_id in due:
        await cancel_hold(uow, None, hold_id, outcome="expired")
    return len(due)


async def announce_late_transfers(uow: SqlUnitOfWork, now: datetime) -> dict[str, int]:
    """Open transfers older than TRANSFER_LATE_DAYS: each announced once
    (`circulation.transfer_late`); returns how many are late per destination."""
    cutoff = now - timedelta(days=uow.settings.transfer_late_days)
    late = (await uow.session.exec(select(Transfer).where(
        col(Transfer.status) == "open", col(Transfer.requested_at) < cutoff)
        .order_by(col(Transfer.transfer_id)).with_for_update(skip_locked=True))).all()
    per_site: dict[str, int] = {}
    for transfer in late:
        per_site[transfer.to_site] = per_site.get(transfer.to_site, 0) + 1
        if transfer.late_at is None:
            transfer.late_at = now
            uow.emit(TransferLate(
                transfer_id=transfer.transfer_id, barcode=transfer.barcode,
                from_site=transfer.from_site, to_site=transfer.to_site,
                requested_at=transfer.requested_at,
                age_days=round((now - transfer.requested_at).total_seconds() / 86400, 2)),
                subject=transfer.barcode)
    return per_site


async def watch_transfers(service: Any) -> None:
    """Job: announce late transfers and keep the late-transfer gauge per site current."""
    async with service.uow() as uow:
        per_site = await announce_late_transfers(uow, utcnow())
    metrics.LATE_TRANSFERS.clear()
    for site, count in per_site.items():
        metrics.LATE_TRANSFERS.labels("circulation", site).set(count)


async def expire_uncollected(service: Any) -> None:
    """The hold-shelf sweep, run every few minutes in every replica: idempotent, it only
    expires holds past their last day (a row lock makes each expire once)."""
    today = datetime.now(ZoneInfo(service.settings.timezone)).date()
    async with service.uow() as uow:
        await expire_holds(uow, today)


@handlers.on(BranchHoldRequested)
async def on_hold_requested(uow: UnitOfWork, env: Envelope, data: BranchHoldRequested) -> None:
    """A hold asked for at a desk or a self-service machine; the branch is the pickup.

    A request the rules refuse (unknown title, over the limit) is recorded as an anomaly
    for staff: the reader asked at the shelf, and someone should answer them.
    """
    assert isinstance(uow, SqlUnitOfWork)
    try:
        await place_hold(uow, env, patron=data.patron, pickup=data.branch, bib_id=data.bib_id,
                         isbn=data.isbn, hold_id=data.hold_id or env.id, at=env.time)
    except (Invalid, HoldRefused) as exc:
        _record_anomaly(uow, env, data.isbn or data.bib_id or "", "hold_refused",
                        f"hold for {data.patron} at {data.branch}: {exc.message}")


@handlers.on(BranchHoldCancelled)
async def on_hold_cancelled(uow: UnitOfWork, env: Envelope, data: BranchHoldCancelled) -> None:
    assert isinstance(uow, SqlUnitOfWork)
    try:
        await cancel_hold(uow, env, data.hold_id, patron=data.patron)
    except (NotFound, Invalid) as exc:
        _record_anomaly(uow, env, data.hold_id, "hold_cancel_refused",
                        f"cancel at {data.branch}: {exc.message}")
