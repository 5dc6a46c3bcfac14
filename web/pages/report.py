"""The network report: per branch and for the network, built only from the services' HTTP
APIs. The services offer no report or statistics endpoint, so each figure is assembled from
what they do answer, labelled with what it really counts; the figures they cannot give
(loans, returns, closed transfers' times, hold waits) are listed as not available rather
than guessed. Tables, server-drawn SVG bars, a CSV export and a printable page.
"""

from __future__ import annotations

import asyncio
import csv
import io
import statistics
from collections import Counter
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, timedelta
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from web import i18n
from web.app import backend, language, render, role
from web.backend import Backend, BackendError
from web.models import StaffUser

router = APIRouter()

Reporter = Annotated[StaffUser, Depends(role("admin", "dispatcher"))]

#: Longest period one report reads (one GET /routes per day; beyond this, narrow it).
MAX_DAYS = 93
#: Calls in flight at once to one service: the report must not crowd out the desks.
PARALLEL = 8
#: A transfer open longer than this is late (the services' ROUTE_TARGET_HOURS default).
LATE_DAYS = 2.0

T = TypeVar("T")

i18n.add({
    "report.title": {"zh": "运行报告", "en": "Network report"},
    "report.from": {"zh": "开始日期", "en": "From"},
    "report.to": {"zh": "结束日期", "en": "To"},
    "report.show": {"zh": "生成", "en": "Show"},
    "report.csv": {"zh": "下载 CSV", "en": "Download CSV"},
    "report.print": {"zh": "打印", "en": "Print"},
    "report.capped": {"zh": "时间段过长，已截为 93 天。", "en": "Period cut to 93 days."},
    "report.network": {"zh": "全网合计", "en": "Network"},
    "report.site": {"zh": "馆点", "en": "Site"},
    "report.ordered": {"zh": "采购册数", "en": "Copies ordered"},
    "report.received": {"zh": "已到馆册数", "en": "Copies received"},
    "report.in_open": {"zh": "在途调入", "en": "Transfers in (open)"},
    "report.out_open": {"zh": "在途调出", "en": "Transfers out (open)"},
    "report.age_median": {"zh": "在途天数中位数", "en": "Open age, median (days)"},
    "report.age_p90": {"zh": "在途天数 P90", "en": "Open age, p90 (days)"},
    "report.late": {"zh": "超时在途", "en": "Late (open > 2 days)"},
    "report.stops_served": {"zh": "送书车已服务站次", "en": "Van stops served"},
    "report.stops_planned": {"zh": "计划站次", "en": "Van stops planned"},
    "report.overdue": {"zh": "当前逾期借阅", "en": "Overdue loans now"},
    "report.chart_stops": {"zh": "送书车已服务站次（按馆点）", "en": "Van stops served, per site"},
    "report.chart_transfers": {"zh": "在途调入（按馆点）", "en": "Open transfers in, per site"},
    "report.chart_received": {"zh": "已到馆册数（按馆点）", "en": "Copies received, per site"},
    "report.none": {"zh": "本期没有数据。", "en": "Nothing in this period."},
    "report.sources": {"zh": "数据来源与口径", "en": "Where each figure comes from"},
    "report.missing": {"zh": "服务接口尚未提供的数据", "en": "Not available from the services"},
    "report.figure": {"zh": "指标", "en": "Figure"},
    "report.needs": {"zh": "需要的接口", "en": "Endpoint it needs"},
    "report.no_acq": {"zh": "您的角色无法读取采访数据（需要采访、编目或管理员权限）。",
                      "en": "Your role may not read acquisition figures (acquisitions, "
                            "cataloger or admin)."},
    "report.src_acq": {"zh": ("采访：GET /orders 与 GET /orders/{id}，"
                              "统计期间内开始的订单的分馆分配与到货。"),
                       "en": "Acquisition: GET /orders and GET /orders/{id}; orders opened in "
                             "the period, their copies per branch and those received so far."},
    "report.src_transfers": {"zh": ("流通：GET /sites/{code}/transfers（调入/调出），"
                                    "为当前在途调拨及其已在途天数，不是期间内已完成的调拨。"),
                             "en": "Circulation: GET /sites/{code}/transfers (in and out): "
                                   "transfers open now and their age, not those completed "
                                   "in the period."},
    "report.src_routes": {"zh": ("物流：GET /routes?date= 与 GET /routes/{id}，"
                                 "期间内每天路线的站点状态。"),
                          "en": "Logistics: GET /routes?date= and GET /routes/{id} for each "
                                "day of the period: each stop's status."},
    "report.src_overdue": {"zh": "流通：GET /sites/{code}/overdue，当前逾期的借阅。",
                           "en": "Circulation: GET /sites/{code}/overdue: loans overdue now."},
})

#: Figures asked for that no service answers over HTTP today, and what would answer them.
MISSING = [
    ({"zh": "借阅数（按馆点、期间）", "en": "Loans per branch in the period"},
     "circulation GET /stats/loans?from=&to= → [{site, loans, renewals}]"),
    ({"zh": "异地还书数", "en": "Returns anywhere (checked in away from home)"},
     "circulation GET /stats/returns?from=&to= → [{site, returns, away_from_home}]"),
    ({"zh": "期间内完成调拨的用时（中位数、P90、超时）",
      "en": "Completed transfers' times (median, p90, late)"},
     "circulation GET /transfers?closed_from=&closed_to= → [{from_site, to_site, "
     "requested_at, closed_at}] (or logistics GET /shipments?delivered_from=&delivered_to=)"),
    ({"zh": "预约等待时间", "en": "Hold wait times"},
     "circulation GET /holds?pickup_branch=&filled_from=&filled_to= → [{placed_at, "
     "ready_at, fulfilled_at}]"),
    ({"zh": "期间内到货日期", "en": "When copies were received (per day)"},
     "acquisition GET /receipts?from=&to= → [{order_id, line_id, branch, copies, at}]"),
]


@dataclass
class Row:
    """One branch's figures (or the network's, on the total row)."""

    site: str
    name: str
    ordered: int = 0
    received: int = 0
    in_open: int = 0
    out_open: int = 0
    age_median: float | None = None
    age_p90: float | None = None
    late: int = 0
    stops_planned: int = 0
    stops_served: int = 0
    overdue: int = 0


COLUMNS = [f.name for f in fields(Row)]


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile: a figure that actually occurred, as staff expect."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * share // 1))
    return round(ordered[int(rank) - 1], 2)


def ages(rows: list[dict[str, Any]]) -> tuple[float | None, float | None, int]:
    values = [float(r["age_days"]) for r in rows]
    median = round(statistics.median(values), 2) if values else None
    return median, percentile(values, 0.9), sum(1 for v in values if v > LATE_DAYS)


async def bounded(calls: list[Awaitable[T]], limit: int = PARALLEL) -> list[T]:
    """Await calls a few at a time, in order."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[T]) -> T:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(c) for c in calls)))


def period(request: Request, start: str | None, end: str | None) -> tuple[date, date, bool]:
    """The report's days: default this month so far; at most MAX_DAYS (cut, and said)."""
    today = datetime.now(ZoneInfo(request.app.state.settings.timezone)).date()
    try:
        to = date.fromisoformat(end) if end else today
    except ValueError:
        to = today
    try:
        frm = date.fromisoformat(start) if start else to.replace(day=1)
    except ValueError:
        frm = to.replace(day=1)
    if frm > to:
        frm, to = to, frm
    capped = (to - frm).days >= MAX_DAYS
    if capped:
        frm = to - timedelta(days=MAX_DAYS - 1)
    return frm, to, capped


async def acquisition(api: Backend, frm: date, to: date, tz: str,
                      ) -> dict[str, tuple[int, int]] | None:
    """Copies ordered and received per branch on orders opened in the period; None when
    the user's role may not read orders."""
    try:
        orders = await api.get("acquisition", "/orders", limit=1000)
    except BackendError as exc:
        if exc.status == 403:
            return None
        raise
    zone = ZoneInfo(tz)
    wanted = [o["order_id"] for o in orders if o.get("opened_at") and frm <= datetime
              .fromisoformat(o["opened_at"]).astimezone(zone).date() <= to]
    views = await bounded([api.get("acquisition", f"/orders/{oid}") for oid in wanted])
    out: dict[str, tuple[int, int]] = {}
    for view in views:
        for line in view.get("lines", []):
            for share in line.get("distribution", []):
                ordered, received = out.get(share["branch"], (0, 0))
                out[share["branch"]] = (ordered + int(share["copies"]) - int(
                    share.get("cancelled", 0)), received + int(share.get("received", 0)))
    return out


async def van_stops(api: Backend, frm: date, to: date) -> tuple[Counter[str], Counter[str]]:
    """Stops planned and served per site on the period's routes."""
    days = [frm + timedelta(days=i) for i in range((to - frm).days + 1)]
    per_day = await bounded([api.get("logistics", "/routes", date=d.isoformat())
                             for d in days])
    ids = [r["route_id"] for rows in per_day for r in rows
           if r["status"] != "cancelled" and r["stops_total"]]
    routes = await bounded([api.get("logistics", f"/routes/{rid}") for rid in ids])
    planned: Counter[str] = Counter()
    served: Counter[str] = Counter()
    for route in routes:
        for stop in route["stops"]:
            planned[stop["site"]] += 1
            served[stop["site"]] += stop["status"] == "served"
    return planned, served


async def build(api: Backend, frm: date, to: date, tz: str) -> dict[str, Any]:
    """The report's rows, network total and chart series."""
    sites = [s for s in await api.get("logistics", "/sites") if s.get("kind") != "hub"]
    codes = [s["code"] for s in sites]
    acq, (planned, served), ins, outs, overdue = await asyncio.gather(
        acquisition(api, frm, to, tz), van_stops(api, frm, to),
        bounded([api.get("circulation", f"/sites/{c}/transfers", direction="in", limit=1000)
                 for c in codes]),
        bounded([api.get("circulation", f"/sites/{c}/transfers", direction="out",
                         limit=1000) for c in codes]),
        bounded([api.get("circulation", f"/sites/{c}/overdue", limit=1000) for c in codes]))
    rows: list[Row] = []
    all_in: list[dict[str, Any]] = []
    for s, tin, tout, late_loans in zip(sites, ins, outs, overdue, strict=True):
        code = s["code"]
        median, p90, late = ages(tin)
        ordered, received = (acq or {}).get(code, (0, 0))
        rows.append(Row(code, s.get("name") or code, ordered, received, len(tin), len(tout),
                        median, p90, late, planned[code], served[code], len(late_loans)))
        all_in.extend(tin)
    median, p90, late = ages(all_in)
    total = Row("*", "", sum(r.ordered for r in rows), sum(r.received for r in rows),
                sum(r.in_open for r in rows), sum(r.out_open for r in rows), median, p90,
                late, sum(r.stops_planned for r in rows), sum(r.stops_served for r in rows),
                sum(r.overdue for r in rows))
    return {"rows": rows, "total": total, "acq_available": acq is not None,
            "charts": [chart("report.chart_stops", rows, "stops_served"),
                       chart("report.chart_transfers", rows, "in_open"),
                       chart("report.chart_received", rows, "received")]}


def short(label: str, room: int = 22) -> str:
    """A label cut to fit the chart's label column (a CJK character is two Latin wide)."""
    used, out = 0, ""
    for ch in label:
        used += 2 if ord(ch) > 0x2E80 else 1
        if used > room:
            return out.rstrip() + "…"
        out += ch
    return out


@dataclass
class Bar:
    label: str
    code: str
    value: float
    width: float
    y: int

    @property
    def short(self) -> str:
        return short(self.label)


@dataclass
class Chart:
    title: str
    key: str
    bars: list[Bar]
    height: int
    top: float


def chart(title: str, rows: list[Row], key: str) -> Chart:
    """A horizontal bar per site with a figure (sites at zero are left out, so it reads)."""
    values = [(r.name, r.site, float(getattr(r, key) or 0)) for r in rows]
    shown = sorted((v for v in values if v[2] > 0), key=lambda v: -v[2])
    top = max((v[2] for v in shown), default=0.0)
    bars = [Bar(name, code, value, round(value / top * 100, 1) if top else 0.0, i * 26)
            for i, (name, code, value) in enumerate(shown)]
    return Chart(title, key, bars, max(26 * len(bars), 26), top)


@router.get("/report", response_class=HTMLResponse)
async def report_page(request: Request, _: Reporter,
                      start: Annotated[str | None, Query(alias="from", max_length=10)] = None,
                      end: Annotated[str | None, Query(alias="to", max_length=10)] = None,
                      ) -> HTMLResponse:
    frm, to, capped = period(request, start, end)
    tz = request.app.state.settings.timezone
    data = await build(backend(request), frm, to, tz)
    lang = language(request)
    missing = [(label.get(lang) or label["en"], need) for label, need in MISSING]
    query = f"from={frm.isoformat()}&to={to.isoformat()}"
    return render(request, "report.html", frm=frm.isoformat(), to=to.isoformat(),
                  capped=capped, missing=missing, query=query, **data)


@router.get("/report.csv")
async def report_csv(request: Request, _: Reporter,
                     start: Annotated[str | None, Query(alias="from", max_length=10)] = None,
                     end: Annotated[str | None, Query(alias="to", max_length=10)] = None,
                     ) -> Response:
    """The report's table as CSV (UTF-8 with BOM, so spreadsheet programs read Chinese)."""
    frm, to, _capped = period(request, start, end)
    data = await build(backend(request), frm, to, request.app.state.settings.timezone)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["from", "to", *COLUMNS])
    for row in [*data["rows"], data["total"]]:
        values = asdict(row)
        writer.writerow([frm.isoformat(), to.isoformat(),
                         *("" if values[c] is None else values[c] for c in COLUMNS)])
    name = f"branchline-report-{frm.isoformat()}-{to.isoformat()}.csv"
    return Response("\ufeff" + out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
