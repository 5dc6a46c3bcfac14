"""The dispatcher's board: the day's plan per van on a map drawn here (no tiles, so it works
offline and prints), late shipments, open exceptions to resolve, and re-planning the day.

Everything comes from logistics' HTTP API; the progress figures refresh from
GET /dispatch/progress, a small JSON answer of this app, so the board never reloads whole.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import httpx
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from web import i18n
from web.app import Csrf, backend, language, redirect, render, role
from web.backend import Backend, BackendError
from web.models import StaffUser

router = APIRouter()

Dispatcher = Annotated[StaffUser, Depends(role("dispatcher"))]

#: Route colours: dark enough for 3:1 contrast on white, told apart without relying on hue
#: alone (each route is also named in the legend and the table).
COLOURS = ("#0b4f8a", "#a1121a", "#1d6b2f", "#8a5a00", "#5a2d82", "#00727a", "#6b3e00")
MAP_WIDTH = 760
MAP_PAD = 40
#: Room right of the easternmost dot for its label.
LABEL_ROOM = 60

i18n.add({
    "dispatch.title": {"zh": "调度台", "en": "Dispatch board"},
    "dispatch.date": {"zh": "日期", "en": "Date"},
    "dispatch.show": {"zh": "显示", "en": "Show"},
    "dispatch.replan": {"zh": "重新规划当天路线", "en": "Re-plan the day"},
    "dispatch.planned": {"zh": "已重新规划。", "en": "The day was re-planned."},
    "dispatch.plan_refused": {"zh": "规划未通过检查：", "en": "The plan was refused:"},
    "dispatch.map": {"zh": "路线图", "en": "Route map"},
    "dispatch.map_desc": {"zh": "各馆点位置与当天各车路线（实心点为已服务站点）",
                          "en": "Sites and the day's van routes (filled dots: stops served)"},
    "dispatch.routes": {"zh": "当天路线", "en": "The day's routes"},
    "dispatch.no_routes": {"zh": "当天还没有路线。", "en": "No routes for this day yet."},
    "dispatch.vehicle": {"zh": "车辆", "en": "Van"},
    "dispatch.driver": {"zh": "司机", "en": "Driver"},
    "dispatch.status": {"zh": "状态", "en": "Status"},
    "dispatch.progress": {"zh": "进度（已服务/总数）", "en": "Progress (served/total)"},
    "dispatch.unserved": {"zh": "未服务", "en": "unserved"},
    "dispatch.seq": {"zh": "序号", "en": "#"},
    "dispatch.site": {"zh": "馆点", "en": "Site"},
    "dispatch.eta": {"zh": "预计到达", "en": "ETA"},
    "dispatch.crates": {"zh": "送/取箱", "en": "Crates drop/collect"},
    "dispatch.km": {"zh": "公里", "en": "km"},
    "dispatch.unplanned": {"zh": "未能安排", "en": "Not planned"},
    "dispatch.reason": {"zh": "原因", "en": "Reason"},
    "dispatch.late": {"zh": "超时运输", "en": "Late shipments"},
    "dispatch.no_late": {"zh": "没有超时的运输。", "en": "No late shipments."},
    "dispatch.barcode": {"zh": "条码", "en": "Barcode"},
    "dispatch.from": {"zh": "发出", "en": "From"},
    "dispatch.to": {"zh": "送往", "en": "To"},
    "dispatch.at": {"zh": "当前位置", "en": "Now at"},
    "dispatch.since": {"zh": "创建时间", "en": "Created"},
    "dispatch.exceptions": {"zh": "未处理异常", "en": "Open exceptions"},
    "dispatch.no_exceptions": {"zh": "没有未处理的异常。", "en": "No open exceptions."},
    "dispatch.kind": {"zh": "类型", "en": "Kind"},
    "dispatch.reported": {"zh": "报告", "en": "Reported"},
    "dispatch.resolve": {"zh": "处理", "en": "Resolve"},
    "dispatch.found": {"zh": "已找到", "en": "found"},
    "dispatch.lost": {"zh": "已丢失", "en": "lost"},
    "dispatch.found_at": {"zh": "找到地点（馆点代码）", "en": "Found at (site code)"},
    "dispatch.resolved": {"zh": "异常已处理。", "en": "The exception was resolved."},
    "dispatch.hub": {"zh": "中转中心", "en": "hub"},
    "dispatch.live": {"zh": "进度每 10 秒自动更新。", "en": "Progress updates every 10 s."},
})


def local_today(request: Request) -> date:
    """Today where the libraries are (the services plan in that time zone, not UTC)."""
    return datetime.now(ZoneInfo(request.app.state.settings.timezone)).date()


def hhmm(value: str | None, tz: str) -> str:
    """An API time as the local clock time a dispatcher reads."""
    if not value:
        return ""
    return datetime.fromisoformat(value).astimezone(ZoneInfo(tz)).strftime("%H:%M")


@dataclass
class Dot:
    code: str
    name: str
    x: float
    y: float
    hub: bool
    label: bool = True


@dataclass
class Line:
    route_id: str
    vehicle: str
    colour: str
    points: str
    stops: list[tuple[float, float, str, bool]] = field(default_factory=list)


@dataclass
class MapView:
    width: int
    height: int
    dots: list[Dot]
    lines: list[Line]


def project(sites: list[dict[str, Any]], routes: list[dict[str, Any]]) -> MapView:
    """Sites and routes as SVG coordinates: equirectangular (longitude scaled by the cosine
    of the mean latitude, good enough across a prefecture), fitted to the bounding box."""
    placed = [s for s in sites if s.get("lat") is not None and s.get("lon") is not None]
    if not placed:
        return MapView(MAP_WIDTH, 200, [], [])
    lats = [float(s["lat"]) for s in placed]
    lons = [float(s["lon"]) for s in placed]
    k = math.cos(math.radians(sum(lats) / len(lats)))
    span_x = max((max(lons) - min(lons)) * k, 1e-6)
    span_y = max(max(lats) - min(lats), 1e-6)
    scale = (MAP_WIDTH - 2 * MAP_PAD - LABEL_ROOM) / span_x
    height = int(span_y * scale + 2 * MAP_PAD)
    height = max(200, min(height, 900))
    scale = min(scale, (height - 2 * MAP_PAD) / span_y)

    def xy(lat: float, lon: float) -> tuple[float, float]:
        return (round(MAP_PAD + (lon - min(lons)) * k * scale, 1),
                round(MAP_PAD + (max(lats) - lat) * scale, 1))

    where = {s["code"]: xy(float(s["lat"]), float(s["lon"])) for s in placed}
    dots = [Dot(s["code"], s.get("name") or s["code"], *where[s["code"]],
                hub=s.get("kind") == "hub") for s in placed]
    # a site standing where another already is (the book van at its depot) draws no second
    # label over the first: it is still a dot with its own <title>, and in the table
    seen: set[tuple[float, float]] = set()
    for dot in sorted(dots, key=lambda d: not d.hub):
        dot.label = (dot.x, dot.y) not in seen
        seen.add((dot.x, dot.y))
    lines = []
    for i, route in enumerate(routes):
        hub = where.get(route["hub"])
        stops = [(*where[s["site"]], s["site"], s["status"] == "served")
                 for s in route.get("stops", []) if s["site"] in where]
        if not stops:
            continue
        path = [p[:2] for p in stops]
        if hub:
            path = [hub, *path, hub]
        lines.append(Line(route["route_id"], route["vehicle"], COLOURS[i % len(COLOURS)],
                          " ".join(f"{x},{y}" for x, y in path), stops))
    return MapView(MAP_WIDTH, height, dots, lines)


async def board(api: Backend, day: date, tz: str) -> dict[str, Any]:
    """Everything the board shows, fetched from logistics side by side."""
    iso = day.isoformat()
    sites, vehicles, drivers, summaries, plans, late, issues = await asyncio.gather(
        api.get("logistics", "/sites"), api.get("logistics", "/vehicles"),
        api.get("logistics", "/drivers"), api.get("logistics", "/routes", date=iso),
        api.get("logistics", "/plans", date=iso), api.get("logistics", "/shipments/late"),
        api.get("logistics", "/exceptions"))
    active = [r for r in summaries if r["status"] != "cancelled" and r["stops_total"]]
    routes: list[dict[str, Any]] = list(await asyncio.gather(
        *(api.get("logistics", f"/routes/{r['route_id']}") for r in active)))
    names = {s["code"]: s.get("name") or s["code"] for s in sites}
    van_names = {v["vehicle_id"]: v.get("name") or v["vehicle_id"] for v in vehicles}
    driver_names = {d["driver_id"]: d.get("name") or d["driver_id"] for d in drivers}
    view = project(sites, routes)
    colour = {line.route_id: line.colour for line in view.lines}
    for route in routes:
        route["colour"] = colour.get(route["route_id"], COLOURS[0])
        route["vehicle_name"] = van_names.get(route["vehicle"], route["vehicle"])
        route["driver_name"] = driver_names.get(route["driver"] or "", route["driver"] or "")
        for stop in route["stops"]:
            stop["eta"] = hhmm(stop["arrival"], tz)
            stop["name"] = stop.get("name") or names.get(stop["site"], stop["site"])
    latest: dict[str, dict[str, Any]] = {}
    for plan in plans:  # newest first: the first per hub is the plan in force
        latest.setdefault(plan["hub"], plan)
    unplanned = [u for p in latest.values() for u in p.get("unplanned", [])]
    for s in late:
        s["since"] = (datetime.fromisoformat(s["created_at"]).astimezone(ZoneInfo(tz))
                      .strftime("%Y-%m-%d %H:%M"))
    return {"day": iso, "routes": routes, "map": view, "late": late, "issues": issues,
            "unplanned": unplanned, "names": names}


async def show(request: Request, day: date, *, problem: str | None = None,
               reasons: list[str] | None = None, notice: str | None = None,
               status_code: int = 200) -> HTMLResponse:
    tz = request.app.state.settings.timezone
    data = await board(backend(request), day, tz)
    return render(request, "dispatch.html", status_code=status_code, problem=problem,
                  reasons=reasons or [], notice=notice, **data)


def parse_day(request: Request, value: str | None) -> date:
    """The board's day: the query's, else today (a bad date is today, not an error page)."""
    try:
        return date.fromisoformat(value) if value else local_today(request)
    except ValueError:
        return local_today(request)


@router.get("/dispatch", response_class=HTMLResponse)
async def dispatch_page(request: Request, _: Dispatcher,
                        day: Annotated[str | None, Query(alias="date", max_length=10)] = None,
                        done: Annotated[str | None, Query(max_length=20)] = None,
                        ) -> HTMLResponse:
    notice = {"planned": "dispatch.planned", "resolved": "dispatch.resolved"}.get(done or "")
    return await show(request, parse_day(request, day), notice=notice)


@router.get("/dispatch/progress")
async def dispatch_progress(request: Request, _: Dispatcher,
                            day: Annotated[str | None, Query(alias="date", max_length=10)]
                            = None) -> JSONResponse:
    """The day's progress per route, for the board's 10-second refresh."""
    iso = parse_day(request, day).isoformat()
    rows = await backend(request).get("logistics", "/routes", date=iso)
    return JSONResponse({"date": iso, "routes": [
        {"route_id": r["route_id"], "served": r["stops_served"], "total": r["stops_total"],
         "unserved": r["stops_unserved"], "status": r["status"],
         "status_label": i18n.status(r["status"], language(request))} for r in rows]})


def _reasons(detail: str) -> list[str]:
    """A refused plan's reasons, one a line (the service joins them with '; ')."""
    return [part.strip() for part in detail.split(";") if part.strip()]


@router.post("/dispatch/plan", response_class=HTMLResponse, dependencies=[Csrf])
async def dispatch_replan(request: Request, _: Dispatcher,
                          day: Annotated[str, Form(alias="date", max_length=10)]) -> Response:
    """Re-plan the day; a plan failing the feasibility check (409) is shown with why."""
    when = parse_day(request, day)
    try:
        # the solver may use its whole time limit: wait for it, past the usual 10 s
        wait = float(request.app.state.settings.route_solve_seconds) + 30
        await backend(request).post("logistics", "/routes/plan", {"date": when.isoformat()},
                                    timeout=httpx.Timeout(wait, connect=3.0))
    except BackendError as exc:
        if exc.status not in (409, 422):
            raise
        return await show(request, when, problem="dispatch.plan_refused",
                          reasons=_reasons(exc.detail), status_code=exc.status)
    return redirect(f"/dispatch?date={when.isoformat()}&done=planned")


@router.post("/dispatch/exceptions/{exception_id}/resolve", response_class=HTMLResponse,
             dependencies=[Csrf])
async def dispatch_resolve(request: Request, _: Dispatcher, exception_id: str,
                           resolution: Annotated[str, Form(pattern="^(found|lost)$")],
                           day: Annotated[str, Form(alias="date", max_length=10)] = "",
                           site: Annotated[str, Form(max_length=64)] = "") -> Response:
    """Resolve an exception: found (at a site: the shipment goes on) or lost."""
    when = parse_day(request, day)
    body: dict[str, str] = {"resolution": resolution}
    if site.strip():
        body["site"] = site.strip()
    try:
        await backend(request).post("logistics", f"/exceptions/{exception_id}/resolve", body)
    except BackendError as exc:
        if exc.status not in (404, 409, 422):
            raise
        return await show(request, when, problem="error.title", reasons=[exc.detail],
                          status_code=exc.status)
    return redirect(f"/dispatch?date={when.isoformat()}&done=resolved")
