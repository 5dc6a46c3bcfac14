"""The driver's route on a phone: today's stops in order, what to drop and collect at
each, and a scan box.

Vans drive through places without signal, so scans never wait for the network: the
page's script (static/driver.js) gives each scan its own id, keeps it in the phone's
storage and sends the waiting ones here whenever it can; this route forwards them to
logistics `POST /scans/batch`, which is idempotent by scan id, so a scan sent twice
(the answer lost on the way back) is applied once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from web import i18n
from web.app import Csrf, Forbidden, backend, render, role
from web.backend import BackendError
from web.models import StaffUser

router = APIRouter()

DriverUser = Annotated[StaffUser, Depends(role("driver", "dispatcher"))]

i18n.add({
    "driver.title": {"zh": "今日路线", "en": "Today's route"},
    "driver.pick": {"zh": "查看哪位司机的路线", "en": "Whose route to show"},
    "driver.pick.submit": {"zh": "查看", "en": "Show"},
    "driver.none": {"zh": "今天没有您的路线。", "en": "You have no route today."},
    "driver.none.other": {"zh": "这位司机今天没有路线。", "en": "This driver has no route today."},
    "driver.unbound": {"zh": "您的账号没有绑定司机编号，请联系管理员。",
                       "en": "Your account has no driver id: ask an administrator."},
    "driver.progress": {"zh": "进度", "en": "Progress"},
    "driver.stops_served": {"zh": "站已完成", "en": "stops served"},
    "driver.vehicle": {"zh": "车辆", "en": "Vehicle"},
    "driver.hub": {"zh": "出发/返回", "en": "Start and end"},
    "driver.eta": {"zh": "预计到达", "en": "ETA"},
    "driver.leave": {"zh": "离开", "en": "leave"},
    "driver.hours": {"zh": "开放时间", "en": "Open"},
    "driver.closed": {"zh": "今日不开放", "en": "closed today"},
    "driver.drop": {"zh": "送达", "en": "Drop"},
    "driver.collect": {"zh": "收取", "en": "Collect"},
    "driver.loose": {"zh": "件未装箱", "en": "loose items"},
    "driver.crates_none": {"zh": "无", "en": "none"},
    "driver.scan": {"zh": "扫描", "en": "Scan"},
    "driver.scan.site": {"zh": "所在站点", "en": "Where you are"},
    "driver.scan.kind": {"zh": "操作", "en": "What you are doing"},
    "driver.scan.code": {"zh": "扫描箱号或图书条码", "en": "Scan a crate or book barcode"},
    "driver.scan.submit": {"zh": "记录", "en": "Record"},
    "driver.kind.arrive": {"zh": "到达", "en": "Arrive"},
    "driver.kind.load": {"zh": "装车（取件）", "en": "Load (pick up)"},
    "driver.kind.unload": {"zh": "卸车（送达）", "en": "Unload (drop)"},
    "driver.kind.depart": {"zh": "离开", "en": "Depart"},
    "driver.kind.pack": {"zh": "装箱", "en": "Pack"},
    "driver.kind.seal": {"zh": "封箱", "en": "Seal"},
    "driver.waiting": {"zh": "{n} 条扫描待发送", "en": "{n} scans waiting to send"},
    "driver.all_sent": {"zh": "全部已发送", "en": "All sent"},
    "driver.offline": {"zh": "离线：恢复网络后自动发送", "en": "Offline: sent when back online"},
    "driver.sent": {"zh": "已发送", "en": "sent"},
    "driver.queued": {"zh": "待发送", "en": "waiting"},
    "driver.refused": {"zh": "被拒绝", "en": "refused"},
    "driver.duplicate": {"zh": "重复扫描（已记录过）", "en": "already recorded"},
    "driver.signin": {"zh": "登录已过期，请重新登录后自动发送",
                      "en": "Signed out: sign in again and they will be sent"},
    "driver.recent": {"zh": "最近的扫描", "en": "Recent scans"},
})

#: The scan kinds a driver uses, in the order of a stop.
KINDS = ("arrive", "unload", "load", "depart", "pack", "seal")


class Scan(BaseModel):
    """One scan as the handset queued it (the shape of logistics' scan)."""

    scan_id: str = Field(min_length=1, max_length=100)
    route_id: str = Field(min_length=1, max_length=100)
    site: str = Field(min_length=1, max_length=64)
    kind: Literal["arrive", "pack", "seal", "load", "unload", "depart"]
    barcodes: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=100)
    crate_id: str | None = Field(default=None, min_length=1, max_length=64)
    time: datetime


class ScanBatch(BaseModel):
    scans: list[Scan] = Field(min_length=1, max_length=500)


def _whose(user: StaffUser, driver: str | None) -> str | None:
    """The driver whose route to show: a driver only their own; others any they name."""
    if user.role == "driver":
        if driver and driver != user.driver:
            raise Forbidden()
        return user.driver
    return driver or None


def _clock(timezone: str) -> Callable[[str | None], str]:
    """Route times come in UTC; the driver reads them on the library's clock."""
    zone = ZoneInfo(timezone)

    def show(value: str | None) -> str:
        if not value:
            return "—"
        return datetime.fromisoformat(value).astimezone(zone).strftime("%H:%M")
    return show


@router.get("/driver", response_class=HTMLResponse)
async def driver_page(request: Request, user: DriverUser, driver: str | None = None,
                      day: Annotated[date | None, Query(alias="date")] = None,
                      ) -> HTMLResponse:
    """Today's route of one driver (or another day's: a driver looks ahead to tomorrow),
    or why there is none."""
    who = _whose(user, driver)
    b = backend(request)
    drivers: list[dict[str, Any]] = []
    if user.role != "driver":
        drivers = await b.get("logistics", "/drivers")
    route: dict[str, Any] | None = None
    if who:
        try:
            route = await b.get("logistics", f"/drivers/{who}/route",
                                date=day.isoformat() if day else None)
        except BackendError as exc:
            if exc.status != 404:
                raise
    current = None
    if route:
        pending = [s for s in route["stops"] if s["status"] not in ("served", "unserved")]
        started = any(s["status"] != "pending" for s in route["stops"])
        current = pending[0]["site"] if pending and started else route["hub"]
    return render(request, "driver.html", who=who, route=route, drivers=drivers,
                  current=current, kinds=KINDS,
                  clock=_clock(request.app.state.settings.timezone))


@router.post("/driver/scans", dependencies=[Csrf])
async def driver_scans(request: Request, user: DriverUser, batch: ScanBatch) -> Response:
    """Forward the handset's waiting scans; logistics answers for each one. A refusal of
    the whole batch comes back with its status, so the script can tell a scan logistics
    will never take (4xx) from a moment without service (5xx: keep it and retry)."""
    try:
        answer = await backend(request).post(
            "logistics", "/scans/batch", batch.model_dump(mode="json", exclude_none=True))
    except BackendError as exc:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)
    return JSONResponse(answer)
