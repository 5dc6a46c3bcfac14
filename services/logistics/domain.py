"""Logistics' rules, free of I/O: what the network looks like and how a shipment moves.

Logistics is the authority on how items move and knows nothing of library policy: it
ships whatever a transfer asks. Driver scans are facts about where a crate or a book
physically is, so a scan that makes no sense for a shipment is reported, never raised.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from shared.contracts.logistics import SiteKind, Weekday
from shared.errors import Invalid

__all__ = ["SiteKind", "Weekday"]

WEEKDAYS: tuple[str, ...] = get_args(Weekday)
SITE_KINDS: tuple[str, ...] = get_args(SiteKind)
EARTH_RADIUS_KM = 6371.0088  # mean Earth radius (IUGG)

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


# --- the network --------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    """One place the delivery service stops at: a hub, the central library or a branch."""

    code: str
    name: str
    kind: str
    lat: float
    lon: float
    hub: str
    opening_hours: dict[str, list[list[str]]]
    courier_days: list[str]
    floating_group: str | None = None
    active: bool = True


@dataclass(frozen=True)
class NetworkProblem:
    """One thing wrong with a network file: which site, which field, what is wrong."""

    index: int | None  # position in the `sites` list; None for the document itself
    site: str | None  # the site's code when it has one
    field: str  # dotted path inside the site, e.g. "opening_hours.mon[0]"
    message: str

    def __str__(self) -> str:
        where = self.site or (f"sites[{self.index}]" if self.index is not None else "network")
        return f"{where}: {self.field}: {self.message}"

    @property
    def path(self) -> str:
        """Where in the document, dotted: `sites.3.opening_hours.tue.0`."""
        if self.index is None:
            return "sites"
        parts = ["sites", str(self.index)]
        if self.field != "site":
            parts.append(self.field.replace("[", ".").replace("]", ""))
        return ".".join(parts)


class InvalidNetwork(Invalid):
    """A network file that can't be loaded; `problems` lists every reason at once."""

    def __init__(self, problems: Sequence[NetworkProblem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems),
                         errors=[(p.path, p.message) for p in self.problems])


@dataclass
class _SiteCheck:
    index: int
    code: str | None
    problems: list[NetworkProblem] = field(default_factory=list)

    def bad(self, field_name: str, message: str) -> None:
        self.problems.append(NetworkProblem(self.index, self.code, field_name, message))


def _text(check: _SiteCheck, raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        check.bad(name, "is required")
        return None
    if not isinstance(value, str) or not value.strip():
        check.bad(name, f"must be a non-empty string, not {value!r}")
        return None
    return value.strip()


def _coordinate(check: _SiteCheck, raw: Mapping[str, Any], name: str, limit: float) -> float:
    value = raw.get(name)
    if value is None:
        check.bad(name, "is required")
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        check.bad(name, f"must be a number, not {value!r}")
        return 0.0
    if not -limit <= value <= limit:
        check.bad(name, f"{value} is out of range (-{limit:g}..{limit:g})")
    return float(value)


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _opening_hours(check: _SiteCheck, raw: Any) -> dict[str, list[list[str]]]:
    """Every weekday present (a missing day is a closed day), intervals sorted and disjoint."""
    hours: dict[str, list[list[str]]] = {day: [] for day in WEEKDAYS}
    if raw is None:
        check.bad("opening_hours", "is required (an empty list marks a closed day)")
        return hours
    if not isinstance(raw, Mapping):
        check.bad("opening_hours",
                  'must map weekdays to intervals, e.g. {"mon": [["09:00", "17:00"]]}')
        return hours
    for day, intervals in raw.items():
        where = f"opening_hours.{day}"
        if day not in WEEKDAYS:
            check.bad(where, f"unknown weekday {day!r} (one of {', '.join(WEEKDAYS)})")
            continue
        if not isinstance(intervals, list):
            check.bad(where, "must be a list of [open, close] pairs")
            continue
        good: list[list[str]] = []
        for n, interval in enumerate(intervals):
            at = f"{where}[{n}]"
            if (not isinstance(interval, list | tuple) or len(interval) != 2
                    or not all(isinstance(t, str) for t in interval)):
                check.bad(at, f'must be an ["HH:MM", "HH:MM"] pair, not {interval!r}')
                continue
            opens, closes = interval
            bad_times = [t for t in (opens, closes) if not _HHMM.match(t)]
            if bad_times:
                check.bad(at, f"{bad_times[0]!r} is not a time of day as HH:MM (00:00-23:59)")
                continue
            if _minutes(opens) >= _minutes(closes):
                check.bad(at, f"opens at {opens} but closes at {closes}: open must be before close")
                continue
            good.append([opens, closes])
        good.sort(key=lambda pair: _minutes(pair[0]))
        for before, after in itertools.pairwise(good):
            if _minutes(after[0]) < _minutes(before[1]):
                check.bad(where, f"intervals {before} and {after} overlap")
        hours[day] = good
    return hours


def _courier_days(check: _SiteCheck, raw: Any) -> list[str]:
    if raw is None:
        check.bad("courier_days", "is required (an empty list means no courier calls)")
        return []
    if not isinstance(raw, list):
        check.bad("courier_days", "must be a list of weekdays")
        return []
    days: list[str] = []
    for n, day in enumerate(raw):
        if day not in WEEKDAYS:
            check.bad(f"courier_days[{n}]",
                      f"unknown weekday {day!r} (one of {', '.join(WEEKDAYS)})")
        elif day in days:
            check.bad(f"courier_days[{n}]", f"{day!r} is listed twice")
        else:
            days.append(day)
    return sorted(days, key=WEEKDAYS.index)


def _site(index: int, raw: Any) -> tuple[Site | None, list[NetworkProblem]]:
    if not isinstance(raw, Mapping):
        return None, [NetworkProblem(index, None, "site", "must be a JSON object")]
    code_raw = raw.get("code")
    check = _SiteCheck(index, code_raw.strip() if isinstance(code_raw, str) else None)
    code = _text(check, raw, "code")
    name = _text(check, raw, "name")
    kind = _text(check, raw, "kind")
    if kind is not None and kind not in SITE_KINDS:
        check.bad("kind", f"unknown kind {kind!r} (one of {', '.join(SITE_KINDS)})")
    lat = _coordinate(check, raw, "lat", 90)
    lon = _coordinate(check, raw, "lon", 180)
    hub = _text(check, raw, "hub")
    hours = _opening_hours(check, raw.get("opening_hours"))
    courier = _courier_days(check, raw.get("courier_days"))
    group = raw.get("floating_group")
    if group is not None and (not isinstance(group, str) or not group.strip()):
        check.bad("floating_group", f"must be a non-empty string or null, not {group!r}")
        group = None
    active = raw.get("active", True)
    if not isinstance(active, bool):
        check.bad("active", f"must be true or false, not {active!r}")
        active = True
    if check.problems:
        return None, check.problems
    assert code and name and kind and hub
    return Site(code=code, name=name, kind=kind, lat=lat, lon=lon, hub=hub,
                opening_hours=hours, courier_days=courier,
                floating_group=group.strip() if group else None, active=active), []


def validate_network(document: Any) -> list[Site]:
    """The sites of a network file, or InvalidNetwork naming every bad site and field.

    The file is `{"sites": [...]}` (a bare list of sites is accepted too). Codes are
    unique; every site's `hub` is a site of kind `hub` in the same file (a hub serves
    itself); coordinates are degrees; opening hours are "HH:MM" pairs with open < close.
    """
    raw_sites = document.get("sites") if isinstance(document, Mapping) else document
    if not isinstance(raw_sites, list) or not raw_sites:
        raise InvalidNetwork([NetworkProblem(None, None, "sites",
                                             "must be a non-empty list of sites")])
    problems: list[NetworkProblem] = []
    sites: list[tuple[int, Site]] = []
    first_index: dict[str, int] = {}
    for index, raw in enumerate(raw_sites):
        site, found = _site(index, raw)
        problems.extend(found)
        if site is None:
            continue
        if site.code in first_index:
            first = first_index[site.code]
            problems.append(NetworkProblem(index, site.code, "code",
                                           f"duplicate code (first at sites[{first}])"))
            continue
        first_index[site.code] = index
        sites.append((index, site))
    kinds = {site.code: site.kind for _, site in sites}
    for index, site in sites:
        if site.hub not in kinds:
            if site.hub not in {_code_of(r) for r in raw_sites}:
                problems.append(NetworkProblem(index, site.code, "hub",
                                               f"refers to {site.hub!r}, which is not in the file"))
        elif kinds[site.hub] != "hub":
            problems.append(NetworkProblem(index, site.code, "hub",
                                           f"{site.hub!r} is a {kinds[site.hub]}, not a hub"))
    if problems:
        raise InvalidNetwork(problems)
    return [site for _, site in sites]


def _code_of(raw: Any) -> str | None:
    code = raw.get("code") if isinstance(raw, Mapping) else None
    return code.strip() if isinstance(code, str) else None


def site_kind(value: str) -> SiteKind:
    """A validated site kind as the contract's type; a value outside it is a bug, not input."""
    if value not in SITE_KINDS:
        raise ValueError(f"unknown site kind {value!r}")
    return cast(SiteKind, value)


def weekday(value: str) -> Weekday:
    """A validated weekday as the contract's type; a value outside it is a bug, not input."""
    if value not in WEEKDAYS:
        raise ValueError(f"unknown weekday {value!r}")
    return cast(Weekday, value)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres: the straight-line lower bound of a drive."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlmb = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


# --- shipments ----------------------------------------------------------------------------

ShipmentStatus = Literal["created", "picked_up", "arrived", "delivered", "cancelled", "exception"]
ScanKind = Literal["arrive", "load", "unload", "depart"]

#: A shipment still moving (or waiting to move); a scan only ever applies to one of these.
OPEN_STATUSES: tuple[str, ...] = ("created", "picked_up", "arrived")


@dataclass(frozen=True)
class ShipmentState:
    """What a scan needs to know of a shipment: its ends, its status, where it last was."""

    status: str
    from_site: str
    to_site: str
    last_site: str


@dataclass(frozen=True)
class ScanEffect:
    """What one scan does to one shipment.

    `outcome` is `picked_up`, `arrived` or `delivered` when the shipment moved (that is
    also its new status and the event to publish), else `ignored` with the reason why.
    """

    outcome: Literal["picked_up", "arrived", "delivered", "ignored"]
    reason: str = ""

    @property
    def moved(self) -> bool:
        return self.outcome != "ignored"

    def describe(self) -> str:
        return self.outcome if self.moved else f"ignored: {self.reason}"


def is_open(status: str) -> bool:
    return status in OPEN_STATUSES


def apply_scan(shipment: ShipmentState, kind: str, site: str) -> ScanEffect:
    """Which status a driver's scan of one item moves a shipment to.

    `load` where the shipment waits (its origin, or the site it was last unloaded at)
    picks it up. `unload` at the destination delivers it, even if its load scan was
    missed (the book is there); `unload` anywhere else of a shipment on a vehicle means
    it arrived at an intermediate stop such as the hub. `arrive` and `depart` record the
    vehicle's stop, not a shipment's move.
    """
    status = shipment.status
    if not is_open(status):
        return ScanEffect("ignored", f"the shipment is {status}")
    if kind in ("arrive", "depart"):
        article = "an" if kind == "arrive" else "a"
        return ScanEffect("ignored", f"{article} {kind} scan records the stop, not a shipment")
    if kind == "load":
        if status == "picked_up":
            return ScanEffect("ignored", "already loaded on a vehicle")
        if site != shipment.last_site:
            return ScanEffect("ignored", f"loaded at {site} but the shipment waits at "
                                         f"{shipment.last_site}")
        return ScanEffect("picked_up")
    if kind == "unload":
        if site == shipment.to_site:
            return ScanEffect("delivered")
        if status == "picked_up":
            return ScanEffect("arrived")
        if status == "created":
            return ScanEffect("ignored", f"unloaded at {site} but never picked up at "
                                         f"{shipment.from_site}")
        return ScanEffect("ignored", f"unloaded at {site} but not loaded since arriving at "
                                     f"{shipment.last_site}")
    return ScanEffect("ignored", f"unknown scan kind {kind!r}")


def can_cancel(status: str) -> bool:
    """A cancelled transfer stops its shipment unless the item was already delivered."""
    return status not in ("delivered", "cancelled")
