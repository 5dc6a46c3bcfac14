"""The branch desk: check books in and out at one site, and see its hold shelf, transfers
and open anomalies.

A check-in or check-out is a branch fact: the page sends it to circulation as a CloudEvent
(`POST /branch-events`), which applies it asynchronously through Kafka. So the page then
watches the item (`GET /items/{barcode}`) for a few seconds until the fact shows, and
answers in large type what to do with the book in hand. The answer travels to the next
page in the session (Post/Redirect/Get), so a reload never sends the fact twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from web import i18n
from web.app import Csrf, Forbidden, backend, redirect, render, role
from web.backend import Backend, BackendError
from web.models import StaffUser

router = APIRouter()

DeskUser = Annotated[StaffUser, Depends(role("desk", "branch_system"))]

#: How long the page waits for circulation to apply a fact, and how often it looks.
WATCH_SECONDS, SETTLED_SECONDS, WATCH_EVERY = 5.0, 1.5, 0.15
#: The key of the last answer in the session (read once by the next desk page).
ANSWER = "desk_answer"

i18n.add({
    "desk.title": {"zh": "流通台", "en": "Branch desk"},
    "desk.pick": {"zh": "选择馆点", "en": "Choose a site"},
    "desk.checkin": {"zh": "还书（归还）", "en": "Check in (return)"},
    "desk.checkin.label": {"zh": "扫描或输入条码", "en": "Scan or type the barcode"},
    "desk.checkin.submit": {"zh": "还书", "en": "Check in"},
    "desk.checkout": {"zh": "借书", "en": "Check out"},
    "desk.checkout.patron": {"zh": "读者证号", "en": "Reader card"},
    "desk.checkout.barcode": {"zh": "图书条码", "en": "Book barcode"},
    "desk.checkout.submit": {"zh": "借出", "en": "Check out"},
    "desk.answer.reshelve": {"zh": "上架", "en": "Reshelve"},
    "desk.answer.reshelve.note": {"zh": "本馆图书，放回书架。",
                                  "en": "It belongs here: put it back on the shelf."},
    "desk.answer.hold": {"zh": "放入预约架", "en": "Put on the hold shelf"},
    "desk.answer.hold.reader": {"zh": "读者", "en": "for reader"},
    "desk.answer.hold.until": {"zh": "保留至", "en": "kept until"},
    "desk.answer.send": {"zh": "送往", "en": "Send to"},
    "desk.answer.send.note": {"zh": "放入调拨箱，等待物流取件。",
                              "en": "Put it in the transfer crate for the van."},
    "desk.answer.lent": {"zh": "已借出", "en": "Checked out"},
    "desk.answer.lent.due": {"zh": "应还日期", "en": "due"},
    "desk.answer.unknown": {"zh": "系统中没有这本书的记录",
                            "en": "This barcode is not in the system"},
    "desk.answer.unknown.note": {"zh": "已登记到本馆；请交给馆员核对。",
                                 "en": "Registered at this branch; give it to staff to check."},
    "desk.answer.slow": {"zh": "系统还在处理，请稍后查看",
                         "en": "Still being processed: look again in a moment"},
    "desk.answer.slow.note": {"zh": "记录已收到，不会丢失；请先把书放在一旁。",
                              "en": "The scan is safely received; set the book aside for now."},
    "desk.answer.other": {"zh": "请核对", "en": "Check this book"},
    "desk.answer.status": {"zh": "当前状态", "en": "Status now"},
    "desk.barcode": {"zh": "条码", "en": "Barcode"},
    "desk.title_col": {"zh": "题名", "en": "Title"},
    "desk.holdshelf": {"zh": "预约架", "en": "Hold shelf"},
    "desk.holdshelf.none": {"zh": "预约架上没有书。", "en": "Nothing on the hold shelf."},
    "desk.reader": {"zh": "读者", "en": "Reader"},
    "desk.expires": {"zh": "保留至", "en": "Kept until"},
    "desk.transfers.in": {"zh": "调入（送来本馆）", "en": "Transfers coming in"},
    "desk.transfers.out": {"zh": "调出（从本馆送走）", "en": "Transfers going out"},
    "desk.transfers.none": {"zh": "没有。", "en": "None."},
    "desk.from": {"zh": "来自", "en": "From"},
    "desk.to": {"zh": "送往", "en": "To"},
    "desk.reason": {"zh": "原因", "en": "Reason"},
    "desk.days": {"zh": "天数", "en": "Days"},
    "desk.anomalies": {"zh": "待处理异常", "en": "Open anomalies"},
    "desk.anomalies.none": {"zh": "没有待处理的异常。", "en": "No open anomalies."},
    "desk.anomaly.kind": {"zh": "类型", "en": "Kind"},
    "desk.anomaly.detail": {"zh": "说明", "en": "Detail"},
    "desk.anomaly.at": {"zh": "时间", "en": "When"},
    "desk.anomaly.resolution": {"zh": "处理结果", "en": "What you found and did"},
    "desk.anomaly.resolve": {"zh": "标记已处理", "en": "Mark resolved"},
    "desk.anomaly.resolved": {"zh": "异常已标记为已处理。", "en": "Anomaly marked resolved."},
    "anomaly.checkout_while_on_loan": {"zh": "借出时仍在借", "en": "Checked out while on loan"},
    "anomaly.checkout_in_transit": {"zh": "在途中被借出", "en": "Checked out in transit"},
    "anomaly.checkout_of_held_item": {"zh": "预约书被他人借出",
                                      "en": "Held copy taken by another reader"},
    "anomaly.checkin_without_loan": {"zh": "未借出却被归还", "en": "Returned without a loan"},
    "anomaly.renewal_without_loan": {"zh": "无借阅记录的续借", "en": "Renewal without a loan"},
    "anomaly.unknown_item": {"zh": "未登记的条码", "en": "Unknown barcode"},
    "anomaly.delivery_without_open_transfer": {"zh": "无调拨单的送达",
                                               "en": "Delivered without a transfer"},
    "anomaly.late_checkin": {"zh": "迟到的还书记录", "en": "Late check-in"},
    "anomaly.over_loan_limit": {"zh": "超过借阅上限", "en": "Over the loan limit"},
    "anomaly.hold_refused": {"zh": "预约未能受理", "en": "Hold refused"},
    "reason.hold": {"zh": "预约", "en": "hold"},
    "reason.return_home": {"zh": "归还原馆", "en": "going home"},
    "reason.new_item": {"zh": "新书", "en": "new book"},
    "reason.rebalance": {"zh": "调配", "en": "rebalancing"},
})


def _may_open(user: StaffUser, site: str) -> None:
    """A desk speaks for its own site only (the services would refuse it anyway)."""
    if user.role != "admin" and user.site != site:
        raise Forbidden()


async def _item(b: Backend, barcode: str) -> dict[str, Any] | None:
    """Circulation's view of an item; None while it does not know the barcode."""
    try:
        view: dict[str, Any] = await b.get("circulation", f"/items/{barcode}")
    except BackendError as exc:
        if exc.status == 404:
            return None
        raise
    return view


async def _watch(b: Backend, barcode: str, seconds: float,
                 done: Callable[[dict[str, Any] | None], bool]) -> dict[str, Any] | None:
    """Poll the item until `done` says the fact shows, or `seconds` pass (then the last
    view): circulation applies branch facts from Kafka, a moment after accepting them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    view = None
    while True:
        await asyncio.sleep(WATCH_EVERY)
        view = await _item(b, barcode)
        if done(view) or loop.time() >= deadline:
            return view


#: A form's id, as the page renders it (uuid4).
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def _event(kind: str, site: str, barcode: str, form: str | None,
           **data: str) -> dict[str, Any]:
    """A branch fact as circulation takes it (docs/events.md, branch.events).

    Its id comes from the form it was sent from and the barcode: a form sent again (a
    double press, a browser retrying on a bad connection) is the same event, which
    circulation takes once; another book from the same form is another event.
    """
    event_id = str(uuid.uuid5(uuid.UUID(form), f"{kind}/{barcode}")) if form \
        else str(uuid.uuid4())
    return {"specversion": "1.0", "id": event_id, "source": f"branch/{site}",
            "type": kind, "subject": barcode, "time": datetime.now(UTC).isoformat(),
            "datacontenttype": "application/json",
            "data": {"branch": site, "barcode": barcode, **data}}


async def _site_name(b: Backend, code: str) -> str:
    """A site's name from logistics (its code if logistics does not know it)."""
    try:
        site = await b.get("logistics", f"/sites/{code}")
    except BackendError:
        return code
    return str(site.get("name") or code)


def _settled(view: dict[str, Any] | None, site: str) -> bool:
    """Already where a check-in here would leave it: the fact will change nothing visible."""
    return view is not None and view.get("site") == site and view.get("loan") is None \
        and view.get("open_transfer") is None \
        and view.get("status") in ("available", "on_hold_shelf")


async def _checkin_answer(b: Backend, site: str, barcode: str,
                          before: dict[str, Any] | None,
                          view: dict[str, Any] | None) -> dict[str, Any]:
    """What the desk does with the book now, from circulation's view after the check-in."""
    answer: dict[str, Any] = {"barcode": barcode, "title": (view or {}).get("title")}
    if view is None or (view == before and not _settled(view, site)):
        return {**answer, "kind": "slow"}
    status = view.get("status")
    transfer = view.get("open_transfer")
    if transfer and status == "in_transit":
        to = str(transfer["to_site"])
        return {**answer, "kind": "send", "to": to, "to_name": await _site_name(b, to),
                "reason": transfer.get("reason")}
    if status == "on_hold_shelf" and view.get("site") == site:
        shelf = await b.get("circulation", f"/sites/{site}/hold-shelf")
        hold: dict[str, Any] = next((h for h in shelf if h.get("barcode") == barcode), {})
        return {**answer, "kind": "hold", "patron": hold.get("patron"),
                "expires": hold.get("expires_on")}
    if status == "available" and view.get("site") == site:
        if before is None and not view.get("owning_branch"):
            return {**answer, "kind": "unknown"}
        return {**answer, "kind": "reshelve"}
    return {**answer, "kind": "other", "status": status}


def _local_time(timezone: str) -> Callable[[str], str]:
    """The services answer in UTC; the desk reads times on the library's clock."""
    zone = ZoneInfo(timezone)
    return lambda value: datetime.fromisoformat(value).astimezone(zone).strftime("%Y-%m-%d %H:%M")


@router.get("/desk", response_class=HTMLResponse)
async def desk_home(request: Request, user: DeskUser) -> Response:
    """A desk goes straight to its own site; an admin picks one."""
    if user.site:
        return redirect(f"/desk/{user.site}")
    sites = await backend(request).get("logistics", "/sites")
    return render(request, "desk_pick.html", sites=sites)


@router.get("/desk/{site}", response_class=HTMLResponse)
async def desk_page(request: Request, site: str, user: DeskUser) -> HTMLResponse:
    """The desk of one site: the boxes, the last answer, and what waits at the site."""
    _may_open(user, site)
    b = backend(request)
    sites, shelf, incoming, outgoing, anomalies = await asyncio.gather(
        b.get("logistics", "/sites"),
        b.get("circulation", f"/sites/{site}/hold-shelf"),
        b.get("circulation", f"/sites/{site}/transfers", direction="in"),
        b.get("circulation", f"/sites/{site}/transfers", direction="out"),
        b.get("circulation", "/anomalies", site=site),
    )
    names = {s["code"]: s["name"] for s in sites}
    if site not in names:
        raise BackendError(404, f"no site {site!r}")
    answer = request.session.pop(ANSWER, None)
    notice = request.session.pop("desk_notice", None)
    return render(request, "desk.html", site=site, site_name=names[site], names=names,
                  shelf=shelf, incoming=incoming, outgoing=outgoing, anomalies=anomalies,
                  answer=answer, notice=notice, form_id=str(uuid.uuid4()),
                  when=_local_time(request.app.state.settings.timezone),
                  focus="patron" if answer and answer.get("kind") == "lent" else "checkin")


@router.post("/desk/{site}/checkin", dependencies=[Csrf])
async def checkin(request: Request, site: str, user: DeskUser,
                  barcode: Annotated[str, Form(min_length=1, max_length=64)],
                  form_id: Annotated[str | None, Form(pattern=UUID_PATTERN)] = None,
                  ) -> Response:
    """Send the check-in, wait for circulation to decide, and say what to do."""
    _may_open(user, site)
    barcode = barcode.strip()
    b = backend(request)
    before = await _item(b, barcode)
    await b.post("circulation", "/branch-events",
                 _event("branch.checkin", site, barcode, form_id))
    if _settled(before, site):
        view = await _watch(b, barcode, SETTLED_SECONDS, lambda v: v != before)
    else:
        view = await _watch(b, barcode, WATCH_SECONDS,
                            lambda v: v is not None and v != before and v.get("loan") is None)
    request.session[ANSWER] = await _checkin_answer(b, site, barcode, before, view)
    return redirect(f"/desk/{site}")


@router.post("/desk/{site}/checkout", dependencies=[Csrf])
async def checkout(request: Request, site: str, user: DeskUser,
                   barcode: Annotated[str, Form(min_length=1, max_length=64)],
                   patron: Annotated[str, Form(min_length=1, max_length=200)],
                   form_id: Annotated[str | None, Form(pattern=UUID_PATTERN)] = None,
                   ) -> Response:
    """Send the check-out and wait until circulation shows the new loan."""
    _may_open(user, site)
    barcode, patron = barcode.strip(), patron.strip()
    b = backend(request)
    await b.post("circulation", "/branch-events",
                 _event("branch.checkout", site, barcode, form_id, patron=patron))

    def lent(view: dict[str, Any] | None) -> bool:
        loan = (view or {}).get("loan") or {}
        return loan.get("branch") == site and loan.get("patron") in (patron, None) \
            and (view or {}).get("status") == "on_loan"

    view = await _watch(b, barcode, WATCH_SECONDS, lent)
    answer: dict[str, Any] = {"barcode": barcode, "title": (view or {}).get("title"),
                              "patron": patron}
    if lent(view):
        answer.update(kind="lent", due=((view or {}).get("loan") or {}).get("due"))
    else:
        answer.update(kind="slow")
    request.session[ANSWER] = answer
    return redirect(f"/desk/{site}")


@router.post("/desk/{site}/anomalies/{anomaly_id}/resolve", dependencies=[Csrf])
async def resolve(request: Request, site: str, anomaly_id: int, user: DeskUser,
                  resolution: Annotated[str, Form(min_length=1, max_length=2000)]) -> Response:
    """Mark an anomaly of this site dealt with, in the desk's own words."""
    _may_open(user, site)
    await backend(request).post("circulation", f"/anomalies/{anomaly_id}/resolve",
                                {"resolution": resolution.strip()})
    request.session["desk_notice"] = "desk.anomaly.resolved"
    return redirect(f"/desk/{site}")
