"""Circulation's HTTP surface: branches post events; anyone signed in asks where an item is."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, status
from pydantic import BaseModel

from services.circulation.handlers import handlers
from services.circulation.models import Item, Loan, Transfer
from shared.contracts import BRANCH_EVENTS, CONTENT_TYPE, EVENTS, InvalidEvent, parse_obj
from shared.contracts.branch import BranchEvent
from shared.errors import NotFound
from shared.service.app import ServiceDep, SessionDep
from shared.service.auth import Principal, current_principal, require

router = APIRouter()


class Accepted(BaseModel):
    accepted: int
    ids: list[str]


@router.post("/branch-events", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted,
             tags=["branch systems"])
async def post_branch_events(
    service: ServiceDep,
    principal: Annotated[Principal, require("branch_system", "desk")],
    body: Annotated[Any, Body(description="One CloudEvent or a JSON array of them")],
) -> Accepted:
    """Same rules as the `branch.events` topic; accepted events join that topic in order."""
    events = body if isinstance(body, list) else [body]
    if not events:
        raise HTTPException(422, [{"loc": ["body"], "msg": "no events given",
                                   "type": "empty"}])
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
        branch = payload.branch
        if not principal.may_speak_for(branch):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"a token for site {principal.site!r} may not speak for branch {branch!r}",
            )
        parsed.append(envelope)
    if errors:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, errors)
    producer = service.producer
    if producer is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "still starting; retry shortly")
    futures = [
        await producer.send(
            service.settings.topic(BRANCH_EVENTS), value=env.to_bytes(), key=env.subject.encode(),
            headers=[("content-type", CONTENT_TYPE.encode())],
        )
        for env in parsed
    ]
    await asyncio.gather(*futures)
    return Accepted(accepted=len(parsed), ids=[e.id for e in parsed])


class TransferView(BaseModel):
    transfer_id: str
    from_site: str
    to_site: str
    reason: str
    requested_at: str


class LoanView(BaseModel):
    loan_id: str
    patron: str
    branch: str
    due: str


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
    session: SessionDep,
    _: Annotated[Principal, Depends(current_principal)],
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
        loan=LoanView(loan_id=loan.loan_id, patron=loan.patron, branch=loan.branch,
                      due=loan.due.isoformat()) if loan else None,
    )
