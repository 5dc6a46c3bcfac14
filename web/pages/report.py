"""The network report: per branch and for the network, from the services' own report
endpoints (acquisition, circulation and logistics `GET /report?from=&to=`), one call each
whatever the period. Tables, server-drawn SVG bars, a CSV export and a printable page.
"""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from web import i18n
from web.app import backend, render, role
from web.backend import Backend, BackendError
from web.models import StaffUser

router = APIRouter()

Reporter = Annotated[StaffUser, Depends(role("admin", "dispatcher"))]

#: Longest period one report covers (the services' own limit).
MAX_DAYS = 366

i18n.add({
    "report.title": {"zh": "运行报告", "en": "Network report"},
    "report.from": {"zh": "开始日期", "en": "From"},
    "report.to": {"zh": "结束日期", "en": "To"},
    "report.show": {"zh": "生成", "en": "Show"},
    "report.csv": {"zh": "下载 CSV", "en": "Download CSV"},
    "report.print": {"zh": "打印", "en": "Print"},
    "report.capped": {"zh": "时间段过长，已截为 366 天。", "en": "Period cut to 366 days."},
    "report.network": {"zh": "全网合计", "en": "Network"},
    "report.site": {"zh": "馆点", "en": "Site"},
    "report.ordered": {"zh": "采购册数", "en": "Copies ordered"},
    "report.delivered": {"zh": "物流送达", "en": "Shipments delivered"},
    "report.loans": {"zh": "借阅", "en": "Loans"},
    "report.returns": {"zh": "还书", "en": "Returns"},
    "report.returned_elsewhere": {"zh": "其中异地还书", "en": "of which returned away"},
    "report.transfers_completed": {"zh": "完成调入", "en": "Transfers completed"},
    "report.transfer_hours_median": {"zh": "调拨用时中位数（小时）",
                                     "en": "Transfer time, median (h)"},
    "report.transfer_hours_p90": {"zh": "调拨用时 P90（小时）", "en": "Transfer time, p90 (h)"},
    "report.transfers_late": {"zh": "超时调拨", "en": "Transfers late"},
    "report.holds_ready": {"zh": "预约到书", "en": "Holds ready"},
    "report.hold_wait_hours_median": {"zh": "预约等待中位数（小时）",
                                      "en": "Hold wait, median (h)"},
    "report.hold_wait_hours_p90": {"zh": "预约等待 P90（小时）", "en": "Hold wait, p90 (h)"},
    "report.open_transfers_in": {"zh": "在途调入（当前）", "en": "Transfers in, open now"},
    "report.open_transfers_out": {"zh": "在途调出（当前）", "en": "Transfers out, open now"},
    "report.chart_loans": {"zh": "借阅（按馆点）", "en": "Loans, per site"},
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
    "report.no_acq": {"zh": "您的角色无法读取采访数据（需要采访、编目或管理员权限）。",
                      "en": "Your role may not read acquisition figures (acquisitions, "
                            "cataloger or admin)."},
    "report.src_acq": {"zh": "采访：订单在期间内开始的各馆分配册数；期间内到馆的册数。",
                       "en": "Acquisition: copies per branch on orders opened in the period; "
                             "copies received in the period."},
    "report.src_circ": {"zh": ("流通：期间内的借阅、异地还书、完成的调拨及用时（申请到送达）、"
                               "预约等待（预约到上架）；在途调拨与逾期为当前数。"),
                        "en": "Circulation: loans, returns anywhere, transfers completed and "
                              "their time (requested → arrived), hold waits (placed → on the "
                              "hold shelf) in the period; open transfers and overdue loans "
                              "are as of now."},
    "report.src_routes": {"zh": "物流：期间内路线的计划站次与已服务站次，送达的运单。",
                          "en": "Logistics: stops planned and served on the period's routes, "
                                "shipments delivered."},
})

@dataclass
class Row:
    """One branch's figures (or the network's, on the total row)."""

    site: str
    name: str
    ordered: int = 0
    received: int = 0
    loans: int = 0
    returns: int = 0
    returned_elsewhere: int = 0
    transfers_completed: int = 0
    transfer_hours_median: float | None = None
    transfer_hours_p90: float | None = None
    transfers_late: int = 0
    holds_ready: int = 0
    hold_wait_hours_median: float | None = None
    hold_wait_hours_p90: float | None = None
    open_transfers_in: int = 0
    open_transfers_out: int = 0
    overdue: int = 0
    stops_planned: int = 0
    stops_served: int = 0
    delivered: int = 0


COLUMNS = [f.name for f in fields(Row)]
FIGURES = COLUMNS[2:]


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


async def _report(api: Backend, service: str, frm: date, to: date) -> dict[str, Any] | None:
    """One service's report for the period; None when the user's role may not read it."""
    try:
        answer: dict[str, Any] = await api.get(service, "/report", **{
            "from": frm.isoformat(), "to": to.isoformat()})
    except BackendError as exc:
        if exc.status == 403:
            return None
        raise
    return answer


def _figures(row: Row, values: dict[str, Any]) -> None:
    for key in FIGURES:
        if key in values:
            setattr(row, key, values[key])


async def build(api: Backend, frm: date, to: date) -> dict[str, Any]:
    """The report's rows, network total and chart series: four calls, side by side."""
    sites, acq, circ, logi = await asyncio.gather(
        api.get("logistics", "/sites"), _report(api, "acquisition", frm, to),
        _report(api, "circulation", frm, to), _report(api, "logistics", frm, to))
    rows = {s["code"]: Row(s["code"], s.get("name") or s["code"])
            for s in sites if s.get("kind") != "hub"}
    total = Row("*", "")
    for answer, key, site_key in ((acq, "branches", "branch"), (circ, "sites", "site"),
                                  (logi, "sites", "site")):
        if answer is None:
            continue
        for values in answer[key]:
            code = values[site_key]
            row = rows.setdefault(code, Row(code, code))
            _figures(row, values)
        _figures(total, answer["network"])
    shown = list(rows.values())
    return {"rows": shown, "total": total, "columns": FIGURES,
            "acq_available": acq is not None,
            "charts": [chart("report.chart_loans", shown, "loans"),
                       chart("report.chart_stops", shown, "stops_served"),
                       chart("report.chart_received", shown, "received")]}


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
    data = await build(backend(request), frm, to)
    query = f"from={frm.isoformat()}&to={to.isoformat()}"
    return render(request, "report.html", frm=frm.isoformat(), to=to.isoformat(),
                  capped=capped, query=query, **data)


@router.get("/report.csv")
async def report_csv(request: Request, _: Reporter,
                     start: Annotated[str | None, Query(alias="from", max_length=10)] = None,
                     end: Annotated[str | None, Query(alias="to", max_length=10)] = None,
                     ) -> Response:
    """The report's table as CSV (UTF-8 with BOM, so spreadsheet programs read Chinese)."""
    frm, to, _capped = period(request, start, end)
    data = await build(backend(request), frm, to)
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
