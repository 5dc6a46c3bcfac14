"""Circulation's HTTP surface: branches post events; anyone signed in asks where an item is."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, status
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import text
from sqlmodel import col, select

from services.circulation import domain
from services.circulation.handlers import cancel_hold, handlers, place_hold
from services.circulation.models import (
    SCHEMA,
    Anomaly,
    Hold,
    Item,
    Loan,
    LoanPolicyRow,
    Transfer,
)
from shared.contracts import (
    BRANCH_EVENTS,
    EVENTS,
    InvalidEvent,
    check_subject,
    parse_obj,
    utcnow,
)
from shared.contracts.branch import BranchEvent
from shared.errors import Conflict, NotFound
from shared.service.app import ReadSessionDep, ServiceDep, SessionDep
from shared.service.auth import SITE_ROLES, Principal, current_principal, require
from shared.service.period import PeriodDep

router = APIRouter()


class Accepted(BaseModel):
    accepted: int
    ids: list[str]


#: Events one `POST /branch-events` may carry; more is a 422 naming the limit.
MAX_EVENTS_PER_REQUEST = 500
#: A branch event's `time` must fall in these years (a due date is computed from it).
EARLIEST_YEAR, LATEST_YEAR = domain.EARLIEST_LOAN_YEAR, domain.LATEST_LOAN_YEAR


@router.post("/branch-events", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted,
             tags=["branch systems"])
async def post_branch_events(
    service: ServiceDep,
    principal: Annotated[Principal, require("branch_system", "desk")],
    body: Annotated[Any, Body(description="One CloudEvent or a JSON array of them "
                              f"(at most {MAX_EVENTS_PER_REQUEST})")],
) -> Accepted:
    """Same rules as the `branch.events` topic; accepted events join that topic in order.

    Accepted events are committed to circulation's outbox (one transaction for the whole
    request) and answered 202 from there: the relay publishes them to `branch.events`
    keyed by barcode, whether or not the broker is reachable right now.
    """
    events = body if isinstance(body, list) else [body]
    if not events:
        raise HTTPException(422, [{"loc": ["body"], "msg": "no events given",
                                   "type": "empty"}])
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise HTTPException(422, [{
            "loc": ["body"], "type": "too_many",
            "msg": f"{len(events)} events: at most {MAX_EVENTS_PER_REQUEST} per request",
        }])
    errors: list[dict[str, Any]] = []
    parsed = []
    for index, raw in enumerate(events):
        prefix: list[Any] = ["body", index] if isinstance(body, list) else ["body"]
        try:
            envelope, payload = parse_obj(raw)
        except InvalidEvent as exc:
            errors.extend({"loc": [*prefix, *f.split(".")], "msg": exc.reason,
                           "type": exc.error_type} for f in exc.fields or ["body"])
            continue
        if not isinstance(payload, BranchEvent):
            errors.append({"loc": [*prefix, "type"], "msg": "only branch.* events are accepted",
                           "type": "wrong_type"})
            continue
        if envelope.type not in handlers:
            errors.append({"loc": [*prefix, "type"],
                           "msg": f"no service handles {envelope.type!r} yet; handled: "
                                  + ", ".join(sorted(t for t in handlers.by_type
                                                     if EVENTS[t].producer == "branch")),
                           "type": "unhandled_type"})
            continue
        if not EARLIEST_YEAR <= envelope.time.year <= LATEST_YEAR:
            errors.append({"loc": [*prefix, "time"], "type": "out_of_range",
                           "msg": f"time: must fall in the years {EARLIEST_YEAR}.."
                                  f"{LATEST_YEAR}"})
            continue
        try:
            check_subject(envelope, payload)
        except InvalidEvent as exc:
            errors.append({"loc": [*prefix, "subject"], "type": exc.error_type,
                           "msg": exc.reason})
            continue
        branch = payload.branch
        if not principal.may_speak_for(branch):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"a token for site {principal.site!r} may not speak for branch {branch!r}",
            )
        parsed.append(envelope)
    if errors:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, errors)
    async with service.uow() as uow:
        for env in parsed:
            uow.forward(topic=BRANCH_EVENTS, key=env.subject.encode(), value=env.to_bytes(),
                        event_type=env.type)
    return Accepted(accepted=len(parsed), ids=[e.id for e in parsed])


class TransferView(BaseModel):
    transfer_id: str
    from_site: str
    to_site: str
    reason: str
    requested_at: str


class LoanView(BaseModel):
    loan_id: str
    patron: str | None = Field(description="Shown only to desk and branch_system tokens of "
                               "the loan's branch, and to admin; null for anyone else")
    branch: str
    due: str


def may_see_patron(principal: Principal, branch: str) -> bool:
    """A loan's patron is personal data: the lending branch's desk and systems, and admin."""
    if principal.role == "admin":
        return True
    return principal.role in SITE_ROLES and principal.site == branch


class ItemView(BaseModel):
    barcode: str
    status: str
    site: str | None
    owning_branch: str | None
    bib_id: str | None
    title: str | None
    open_transfer: TransferView | None
    loan: LoanView | None


@router.get("/items/{barcode}", response_model=ItemView, tags=["items"])
async def get_item(
    barcode: str,
    session: ReadSessionDep,
    principal: Annotated[Principal, Depends(current_principal)],
) -> ItemView:
    item = await session.get(Item, barcode)
    if item is None:
        raise NotFound(f"no item with barcode {barcode!r}")
    transfer = await session.get(Transfer, item.open_transfer_id) \
        if item.open_transfer_id else None
    loan = await session.get(Loan, item.loan_id) if item.loan_id else None
    return ItemView(
        barcode=item.barcode, status=item.status, site=item.site,
        owning_branch=item.owning_branch, bib_id=item.bib_id, title=item.title,
        open_transfer=TransferView(
            transfer_id=transfer.transfer_id, from_site=transfer.from_site,
            to_site=transfer.to_site, reason=transfer.reason,
            requested_at=transfer.requested_at.isoformat(),
        ) if transfer else None,
        loan=LoanView(loan_id=loan.loan_id,
                      patron=loan.patron if may_see_patron(principal, loan.branch) else None,
                      branch=loan.branch, due=loan.due.isoformat()) if loan else None,
    )


# --- holds ----------------------------------------------------------------------------------


class HoldIn(BaseModel):
    """A hold placed by staff (or a catalogue) for a reader: a title by bib id or ISBN."""

    patron: str = Field(min_length=1, max_length=200)
    pickup_branch: str = Field(min_length=1)
    bib_id: str | None = Field(default=None, min_length=1)
    isbn: str | None = Field(default=None, min_length=10, max_length=17)
    hold_id: str | None = Field(default=None, min_length=1, max_length=200,
                                description="The caller's own id: sent again, the same hold")

    @model_validator(mode="after")
    def _title_given(self) -> HoldIn:
        if not self.bib_id and not self.isbn:
            raise ValueError("one of bib_id or isbn is required")
        return self


class HoldView(BaseModel):
    hold_id: str
    patron: str | None = Field(description="Shown to the pickup branch's desk and admin")
    bib_id: str | None
    isbn: str | None
    pickup_branch: str
    status: str = Field(description="waiting | in_transit | ready | fulfilled | cancelled | "
                                    "expired")
    barcode: str | None
    placed_at: datetime
    expires_on: date | None
    position: int | None = Field(default=None,
                                 description="Place in line for the title while waiting")


def _hold_view(hold: Hold, principal: Principal, position: int | None = None) -> HoldView:
    return HoldView(hold_id=hold.hold_id,
                    patron=hold.patron if may_see_patron(principal, hold.pickup_branch)
                    else None,
                    bib_id=hold.bib_id, isbn=hold.isbn, pickup_branch=hold.pickup_branch,
                    status=hold.status, barcode=hold.barcode, placed_at=hold.placed_at,
                    expires_on=hold.expires_on, position=position)


@router.post("/holds", response_model=HoldView, status_code=status.HTTP_201_CREATED,
             tags=["holds"])
async def post_hold(
    body: HoldIn,
    service: ServiceDep,
    principal: Annotated[Principal, require("desk", "branch_system")],
) -> HoldView:
    """Place a hold; it is filled at once when a copy is free (the hold shelf, or a
    transfer from the copy cheapest to move), else it waits in line for the title.
    422 for an unknown branch or a title with no copy and none on order; 409 over the
    reader's limit of active holds. A desk places holds for pickup at its own site."""
    if not principal.may_speak_for(body.pickup_branch):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"a token of {principal.site} may not place holds for pickup at "
                            f"{body.pickup_branch}")
    async with service.uow() as uow:
        hold = await place_hold(uow, None, patron=body.patron, pickup=body.pickup_branch,
                                bib_id=body.bib_id, isbn=body.isbn, hold_id=body.hold_id,
                                at=utcnow())
    return _hold_view(hold, principal)


@router.delete("/holds/{hold_id}", response_model=HoldView, tags=["holds"])
async def delete_hold(
    hold_id: str,
    service: ServiceDep,
    principal: Annotated[Principal, require("desk", "branch_system")],
) -> HoldView:
    """Cancel a hold at any stage; its copy goes to the next reader in line, or home."""
    async with service.uow() as uow:
        hold = await cancel_hold(uow, None, hold_id)
    return _hold_view(hold, principal)


@router.get("/holds/{hold_id}", response_model=HoldView, tags=["holds"])
async def get_hold(hold_id: str, session: SessionDep,
                   principal: Annotated[Principal, Depends(current_principal)]) -> HoldView:
    hold = await session.get(Hold, hold_id)
    if hold is None:
        raise NotFound(f"no hold {hold_id!r}")
    position = None
    if hold.status == "waiting":
        ahead = await session.exec(select(Hold.hold_id).where(
            col(Hold.title_key) == hold.title_key, col(Hold.status) == "waiting",
            col(Hold.placed_at) < hold.placed_at))
        position = len(ahead.all()) + 1
    return _hold_view(hold, principal, position)


@router.get("/sites/{code}/hold-shelf", response_model=list[HoldView], tags=["holds"])
async def hold_shelf(code: str, session: SessionDep,
                     principal: Annotated[Principal, Depends(current_principal)],
                     ) -> list[HoldView]:
    """What waits on a branch's hold shelf, soonest to expire first."""
    rows = await session.exec(select(Hold).where(
        col(Hold.pickup_branch) == code, col(Hold.status) == "ready")
        .order_by(col(Hold.expires_on), col(Hold.hold_id)))
    return [_hold_view(h, principal) for h in rows]


# --- staff views: anomalies, transfers, a reader's loans and holds ---------------------------


class AnomalyView(BaseModel):
    id: int
    barcode: str
    kind: str = Field(description="checkout_while_on_loan | checkout_in_transit | "
                                  "checkout_of_held_item | renewal_without_loan | unknown_item "
                                  "| delivery_without_open_transfer | late_checkin | "
                                  "late_renewal | late_missing | hold_refused | ...")
    detail: str
    site: str | None
    at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None


@router.get("/anomalies", response_model=list[AnomalyView], tags=["staff"])
async def list_anomalies(
    session: SessionDep,
    principal: Annotated[Principal, require("desk", "branch_system")],
    site: Annotated[str | None, Query(min_length=1)] = None,
    open_only: Annotated[bool, Query(alias="open")] = True,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[AnomalyView]:
    """Facts that contradicted circulation's record, oldest first; a desk sees its site's
    (details may name readers: desks and admin only)."""
    if principal.role in SITE_ROLES:
        site = principal.site
    query = select(Anomaly)
    if site:
        query = query.where(col(Anomaly.site) == site)
    if open_only:
        query = query.where(col(Anomaly.resolved_at).is_(None))
    rows = await session.exec(query.order_by(col(Anomaly.at), col(Anomaly.id)).limit(limit))
    return [AnomalyView.model_validate(a, from_attributes=True) for a in rows]


class ResolveIn(BaseModel):
    resolution: str = Field(min_length=1, max_length=2000,
                            description="What staff found and did")


@router.post("/anomalies/{anomaly_id}/resolve", response_model=AnomalyView, tags=["staff"])
async def resolve_anomaly(
    anomaly_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    body: ResolveIn,
    service: ServiceDep,
    principal: Annotated[Principal, require("desk")],
) -> AnomalyView:
    """Mark an anomaly dealt with (a desk: its own site's); 409 if it already was."""
    async with service.uow() as uow:
        anomaly = await uow.session.get(Anomaly, anomaly_id, with_for_update=True)
        if anomaly is None:
            raise NotFound(f"no anomaly {anomaly_id}")
        if principal.role in SITE_ROLES and anomaly.site != principal.site:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"anomaly {anomaly_id} belongs to {anomaly.site}")
        if anomaly.resolved_at is not None:
            raise Conflict(f"anomaly {anomaly_id} was resolved at "
                           f"{anomaly.resolved_at.isoformat()}")
        anomaly.resolved_at, anomaly.resolved_by = utcnow(), principal.subject
        anomaly.resolution = body.resolution
        view = AnomalyView.model_validate(anomaly, from_attributes=True)
    return view


class SiteTransferView(BaseModel):
    transfer_id: str
    barcode: str
    from_site: str
    to_site: str
    reason: str
    hold_id: str | None
    requested_at: datetime
    age_days: float


@router.get("/sites/{code}/transfers", response_model=list[SiteTransferView], tags=["staff"])
async def site_transfers(
    code: str,
    session: SessionDep,
    _: Annotated[Principal, Depends(current_principal)],
    direction: Annotated[Literal["in", "out"], Query()] = "in",
    older_than_days: Annotated[float, Query(ge=0, le=3650)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> list[SiteTransferView]:
    """Open transfers coming to (`in`) or leaving (`out`) a site, oldest first;
    `older_than_days` lists only the late ones."""
    now = utcnow()
    end = col(Transfer.to_site) if direction == "in" else col(Transfer.from_site)
    rows = await session.exec(select(Transfer).where(
        end == code, col(Transfer.status) == "open",
        col(Transfer.requested_at) <= now - timedelta(days=older_than_days))
        .order_by(col(Transfer.requested_at)).limit(limit))
    return [SiteTransferView(**t.model_dump(include={"transfer_id", "barcode", "from_site",
                                                     "to_site", "reason", "hold_id",
                                                     "requested_at"}),
                             age_days=round((now - t.requested_at).total_seconds() / 86400, 2))
            for t in rows]


class PatronLoanView(BaseModel):
    loan_id: str
    barcode: str
    branch: str
    checked_out_at: datetime
    due: date
    overdue: bool


class PatronView(BaseModel):
    patron: str
    loans: list[PatronLoanView]
    holds: list[HoldView]


@router.get("/patrons/{patron}", response_model=PatronView, tags=["staff"])
async def patron_view(
    patron: str,
    session: SessionDep,
    principal: Annotated[Principal, require("desk")],
) -> PatronView:
    """A reader's current loans and active holds, for the desk serving them (patron data:
    desk and admin only)."""
    today = utcnow().date()
    loans = await session.exec(select(Loan).where(
        col(Loan.patron) == patron, col(Loan.returned_at).is_(None))
        .order_by(col(Loan.due)))
    holds = await session.exec(select(Hold).where(
        col(Hold.patron) == patron, col(Hold.status).in_(domain.ACTIVE_HOLD_STATUSES))
        .order_by(col(Hold.placed_at)))
    return PatronView(
        patron=patron,
        loans=[PatronLoanView(loan_id=loan.loan_id, barcode=loan.barcode, branch=loan.branch,
                              checked_out_at=loan.checked_out_at, due=loan.due,
                              overdue=loan.due < today) for loan in loans],
        holds=[HoldView(**_hold_view(h, Principal(role="admin")).model_dump())
               for h in holds])


@router.get("/sites/{code}/overdue", response_model=list[PatronLoanView], tags=["staff"])
async def overdue_loans(
    code: str,
    session: SessionDep,
    _: Annotated[Principal, Depends(current_principal)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> list[PatronLoanView]:
    """Loans made at a site and past their due date, most overdue first."""
    today = utcnow().date()
    rows = await session.exec(select(Loan).where(
        col(Loan.branch) == code, col(Loan.returned_at).is_(None), col(Loan.due) < today)
        .order_by(col(Loan.due)).limit(limit))
    return [PatronLoanView(loan_id=loan.loan_id, barcode=loan.barcode, branch=loan.branch,
                           checked_out_at=loan.checked_out_at, due=loan.due, overdue=True)
            for loan in rows]


# --- the network report ---------------------------------------------------------------------


class SiteFigures(BaseModel):
    """One site's circulation over a period (or the network's, in `network`)."""

    loans: int = Field(description="Loans made there")
    returns: int = Field(description="Loans returned there, wherever they were made")
    returned_elsewhere: int = Field(description="Of those, loans made at another site")
    transfers_completed: int = Field(description="Transfers that arrived there")
    transfer_hours_median: float | None
    transfer_hours_p90: float | None
    transfers_late: int = Field(description="Of those, flagged late on the way")
    holds_ready: int = Field(description="Holds whose copy reached that pickup branch")
    hold_wait_hours_median: float | None = Field(description="Placed → ready")
    hold_wait_hours_p90: float | None
    open_transfers_in: int = Field(description="Now, whatever the period")
    open_transfers_out: int = Field(description="Now, whatever the period")
    overdue: int = Field(description="Loans made there past due now")


class SiteReport(SiteFigures):
    site: str


class CirculationReport(BaseModel):
    from_: date = Field(alias="from")
    to: date
    sites: list[SiteReport]
    network: SiteFigures


#: Each query counts per site and, on the ROLLUP row (site NULL), for the network.
_REPORT_QUERIES = {
    "loans": """SELECT branch, count(*) AS loans FROM {s}.loan
                WHERE checked_out_at >= :start AND checked_out_at < :end
                GROUP BY ROLLUP (branch)""",
    "returns": """SELECT returned_branch, count(*) AS returns,
                         count(*) FILTER (WHERE returned_branch <> branch) AS returned_elsewhere
                  FROM {s}.loan WHERE returned_at >= :start AND returned_at < :end
                  GROUP BY ROLLUP (returned_branch)""",
    "transfers": """SELECT to_site, count(*) AS transfers_completed,
                      percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM
                          closed_at - requested_at) / 3600) AS transfer_hours_median,
                      percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM
                          closed_at - requested_at) / 3600) AS transfer_hours_p90,
                      count(*) FILTER (WHERE late_at IS NOT NULL) AS transfers_late
                    FROM {s}.transfer WHERE status = 'completed'
                      AND closed_at >= :start AND closed_at < :end
                    GROUP BY ROLLUP (to_site)""",
    "holds": """SELECT pickup_branch, count(*) AS holds_ready,
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM
                      ready_at - placed_at) / 3600) AS hold_wait_hours_median,
                  percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM
                      ready_at - placed_at) / 3600) AS hold_wait_hours_p90
                FROM {s}.hold WHERE ready_at >= :start AND ready_at < :end
                GROUP BY ROLLUP (pickup_branch)""",
    "open_in": """SELECT to_site, count(*) AS open_transfers_in FROM {s}.transfer
                  WHERE status = 'open' GROUP BY ROLLUP (to_site)""",
    "open_out": """SELECT from_site, count(*) AS open_transfers_out FROM {s}.transfer
                   WHERE status = 'open' GROUP BY ROLLUP (from_site)""",
    "overdue": """SELECT branch, count(*) AS overdue FROM {s}.loan
                  WHERE returned_at IS NULL AND due < :today GROUP BY ROLLUP (branch)""",
}


@router.get("/report", response_model=CirculationReport, response_model_by_alias=True,
            tags=["staff"])
async def network_report(
    session: SessionDep,
    service: ServiceDep,
    _: Annotated[Principal, require("dispatcher")],
    period: PeriodDep,
) -> CirculationReport:
    """Loans, returns anywhere, transfer and hold-wait times per site and for the network
    over a period, in a few grouped queries (the network report reads this once rather than
    every site's lists). Days are the library's (`TIMEZONE`)."""
    start, end = period.bounds(service.settings.timezone)
    params = {"start": start, "end": end,
              "today": datetime.now(ZoneInfo(service.settings.timezone)).date()}
    per_site: dict[str | None, dict[str, Any]] = {}
    for query in _REPORT_QUERIES.values():
        sql = text(query.format(s=SCHEMA))
        result = await session.execute(sql, {k: v for k, v in params.items()
                                              if f":{k}" in query})
        for row in result.mappings():
            site: str | None = next(iter(row.values()))
            figures = per_site.setdefault(site, {})
            for key, value in row.items():
                if key in SiteFigures.model_fields:
                    figures[key] = round(float(value), 2) if isinstance(value, float) else value
    empty = {name: None if "hours" in name else 0 for name in SiteFigures.model_fields}
    network = per_site.pop(None, {})
    return CirculationReport.model_validate({
        "from": period.start, "to": period.end, "network": {**empty, **network},
        "sites": [{"site": site, **empty, **figures}
                  for site, figures in sorted(per_site.items(), key=lambda kv: str(kv[0]))]})


# --- loan policies ----------------------------------------------------------------------------


class LoanPolicyIn(BaseModel):
    scope: str = Field(default="*", min_length=1, max_length=100,
                       description="A site code, a floating group, or `*` for everywhere")
    item_type: str = Field(default="*", min_length=1, max_length=50)
    loan_days: int = Field(ge=1, le=3650)
    renewals: int = Field(ge=0, le=100)
    max_items: int = Field(ge=1, le=10000)


class LoanPolicyView(LoanPolicyIn):
    policy_id: str
    updated_at: datetime


@router.put("/loan-policies/{policy_id}", response_model=LoanPolicyView, tags=["staff"])
async def put_loan_policy(
    policy_id: Annotated[str, Path(min_length=1, max_length=100)],
    body: LoanPolicyIn,
    service: ServiceDep,
    _: Annotated[Principal, require()],
) -> LoanPolicyView:
    """Create or change a loan policy (admin). The most specific one applies to a loan:
    the site's own, then its group's, then `*`; the item's type before `*`."""
    async with service.uow() as uow:
        row = await uow.repo(LoanPolicyRow).put(LoanPolicyRow(
            policy_id=policy_id, updated_at=utcnow(), **body.model_dump()))
        view = LoanPolicyView.model_validate(row, from_attributes=True)
    return view


@router.get("/loan-policies", response_model=list[LoanPolicyView], tags=["staff"])
async def list_loan_policies(session: SessionDep,
                             _: Annotated[Principal, Depends(current_principal)],
                             ) -> list[LoanPolicyView]:
    rows = await session.exec(select(LoanPolicyRow).order_by(col(LoanPolicyRow.policy_id)))
    return [LoanPolicyView.model_validate(r, from_attributes=True) for r in rows]
