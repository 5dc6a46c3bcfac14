"""Logistics' rules, free of I/O: what the network looks like and how a shipment moves.

Logistics is the authority on how items move and knows nothing of library policy: it
ships whatever a transfer asks. Driver scans are facts about where a crate or a book
physically is, so a scan that makes no sense for a shipment is reported, never raised.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
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
    address: str | None = None
    service_minutes: int = 10


#: Minutes a van spends at a stop when a site does not say (parking, crates, signature).
DEFAULT_SERVICE_MINUTES: dict[str, int] = {
    "hub": 20, "central": 15, "county": 15, "town": 10, "village": 8, "smart_room": 5,
    "book_van": 15, "bookmobile_stop": 0,
}
VEHICLE_KINDS = ("van", "book_van")
#: Days a vehicle runs when the file does not say.
DEFAULT_VEHICLE_DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class BookVanStop:
    """A book van parked at a bookmobile_stop site from `arrive` to `depart` ("HH:MM")."""

    site: str
    arrive: str
    depart: str


@dataclass(frozen=True)
class BookVanDay:
    """One round of a book van: a weekday, optionally only the n-th of the month."""

    day: str
    week: int | None
    stops: list[BookVanStop]


@dataclass(frozen=True)
class VehicleSpec:
    """A delivery van, or a book van (a moving site with a timetable of stops)."""

    id: str
    name: str
    kind: str
    depot: str
    capacity_crates: int
    shift_start: str
    shift_end: str
    days: list[str]
    active: bool = True
    site: str | None = None
    timetable: list[BookVanDay] = field(default_factory=list)


@dataclass(frozen=True)
class DriverSpec:
    """A driver and the vehicle they usually drive (None: a relief driver)."""

    id: str
    name: str
    vehicle: str | None
    phone: str | None = None
    active: bool = True


@dataclass(frozen=True)
class Network:
    """A whole network file, validated: what loading it and planning routes need."""

    sites: list[Site]
    vehicles: list[VehicleSpec]
    drivers: list[DriverSpec]


#: The `field` of a problem with a whole entry (not a JSON object), per section.
_WHOLE_ENTRY = {"sites": "site", "vehicles": "vehicle", "drivers": "driver"}


@dataclass(frozen=True)
class NetworkProblem:
    """One thing wrong with a network file: which site, which field, what is wrong."""

    index: int | None  # position in its section's list; None for the document itself
    site: str | None  # the site's code (vehicle's, driver's id) when it has one
    field: str  # dotted path inside the entry, e.g. "opening_hours.mon[0]"
    message: str
    section: str = "sites"  # sites | vehicles | drivers

    def __str__(self) -> str:
        """`JX-A: hub: ...` for a site; `vehicle VAN-01: shift: ...` for a vehicle or driver."""
        if self.site:
            noun = _WHOLE_ENTRY.get(self.section, "site")
            where = self.site if noun == "site" else f"{noun} {self.site}"
        elif self.index is not None and self.index >= 0:
            where = f"{self.section}[{self.index}]"
        else:
            where = "network" if self.index is None else _WHOLE_ENTRY.get(self.section, "entry")
        return f"{where}: {self.field}: {self.message}"

    @property
    def path(self) -> str:
        """Where in the document, dotted: `sites.3.opening_hours.tue.0`."""
        if self.index is None:
            return self.section
        whole = self.field == _WHOLE_ENTRY.get(self.section)
        if self.index < 0:  # a single entry (an HTTP edit): the path is inside it
            return "" if whole else self.field.replace("[", ".").replace("]", "")
        parts = [self.section, str(self.index)]
        if not whole:
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
    section: str = "sites"

    def bad(self, field_name: str, message: str) -> None:
        self.problems.append(NetworkProblem(self.index, self.code, field_name, message,
                                            self.section))


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


def _courier_days(check: _SiteCheck, raw: Any, name: str = "courier_days") -> list[str]:
    if raw is None:
        check.bad(name, "is required (an empty list means no courier calls)")
        return []
    if not isinstance(raw, list):
        check.bad(name, "must be a list of weekdays")
        return []
    days: list[str] = []
    for n, day in enumerate(raw):
        if day not in WEEKDAYS:
            check.bad(f"{name}[{n}]",
                      f"unknown weekday {day!r} (one of {', '.join(WEEKDAYS)})")
        elif day in days:
            check.bad(f"{name}[{n}]", f"{day!r} is listed twice")
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
    active = _flag(check, raw, "active")
    address = raw.get("address")
    if address is not None and not isinstance(address, str):
        check.bad("address", f"must be a string or null, not {address!r}")
        address = None
    service = raw.get("service_minutes")
    if service is None:
        service = DEFAULT_SERVICE_MINUTES.get(kind or "", 10)
    elif isinstance(service, bool) or not isinstance(service, int) or not 0 <= service <= 240:
        check.bad("service_minutes", f"must be a whole number of minutes 0..240, not "
                                     f"{service!r}")
        service = 10
    if check.problems:
        return None, check.problems
    assert code and name and kind and hub
    return Site(code=code, name=name, kind=kind, lat=lat, lon=lon, hub=hub,
                opening_hours=hours, courier_days=courier,
                floating_group=group.strip() if group else None, active=active,
                address=address.strip() or None if address else None,
                service_minutes=service), []


def _flag(check: _SiteCheck, raw: Mapping[str, Any], name: str) -> bool:
    value = raw.get(name, True)
    if not isinstance(value, bool):
        check.bad(name, f"must be true or false, not {value!r}")
        return True
    return value


def parse_network(document: Any) -> Network:
    """The sites, vehicles and drivers of a network file, or InvalidNetwork naming every
    bad entry and field at once (one file is all or nothing, so report it all in one go).

    The file (a bare list of sites is accepted too)::

        {"network": str, "description": str,
         "sites": [{"code", "name", "kind", "lat", "lon", "hub", "opening_hours",
                    "courier_days", "floating_group"?, "active"? (true),
                    "address"? (null), "service_minutes"? (0..240, default by kind:
                    DEFAULT_SERVICE_MINUTES)}],
         "vehicles"?: [{"id", "name", "kind": "van" | "book_van" (van),
                        "depot": <code of a hub>, "capacity_crates": 1..1000,
                        "shift": ["HH:MM", "HH:MM"] (start < end),
                        "days"? (mon..sat), "active"? (true),
                        book_van only: "site": <code of kind book_van>,
                        "timetable": [{"day": weekday, "week": 1..5 | null (every week),
                                       "stops": [{"site": <code of kind bookmobile_stop>,
                                                  "arrive": "HH:MM",
                                                  "depart": "HH:MM"}]}]}],
         "drivers"?: [{"id", "name", "vehicle": <vehicle id> | null, "phone"?: str | null,
                       "active"? (true)}]}

    Codes and ids are unique in their section. A site's `hub` is a site of kind `hub` (a
    hub serves itself); coordinates are degrees; opening hours map weekdays to "HH:MM"
    pairs with open < close (a missing day is closed). A book van is a moving site: the
    site it names is driven by exactly one book_van vehicle (loans on board are that
    site's events), and its stops are in time order with arrive < depart. Cross
    references are checked against what each entry declares, so one bad site is reported
    once, not again by every vehicle that names it.
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
    declared = _declared(raw_sites, "code", "kind")
    for index, site in sites:
        if site.hub not in declared:
            problems.append(NetworkProblem(index, site.code, "hub",
                                           f"refers to {site.hub!r}, which is not in the file"))
        elif declared[site.hub] != "hub":
            problems.append(NetworkProblem(index, site.code, "hub",
                                           f"{site.hub!r} is a {declared[site.hub]}, not a hub"))
    raw_vehicles = _section(document, "vehicles", problems)
    vehicles = _entries(raw_vehicles, "vehicles", problems,
                        lambda i, raw: _vehicle(i, raw, declared))
    vehicle_ids = _declared(raw_vehicles, "id", "id").keys()
    drivers = _entries(_section(document, "drivers", problems), "drivers", problems,
                       lambda i, raw: _driver(i, raw, vehicle_ids))
    problems.extend(_book_van_sites(sites, raw_vehicles, vehicles))
    if problems:
        raise InvalidNetwork(problems)
    return Network([site for _, site in sites], vehicles, drivers)


def validate_network(document: Any) -> list[Site]:
    """The sites of a network file (see parse_network for the format), or InvalidNetwork."""
    return parse_network(document).sites


def _declared(raw: Sequence[Any], key: str, value: str) -> dict[str, str]:
    """`key` -> `value` of every entry that states both as strings (the first one wins)."""
    found: dict[str, str] = {}
    for entry in raw:
        if isinstance(entry, Mapping):
            k, v = entry.get(key), entry.get(value)
            if isinstance(k, str) and isinstance(v, str) and k.strip():
                found.setdefault(k.strip(), v.strip())
    return found


def _section(document: Any, section: str, problems: list[NetworkProblem]) -> list[Any]:
    raw = document.get(section, []) if isinstance(document, Mapping) else []
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(NetworkProblem(None, None, section, "must be a list", section))
        return []
    return raw


_Entry = tuple[Any, list[NetworkProblem]]


def _entries(raw: Sequence[Any], section: str, problems: list[NetworkProblem],
             parse: Callable[[int, Any], _Entry]) -> list[Any]:
    """Every entry of a section parsed; ids unique (a duplicate is named, not kept)."""
    found: list[Any] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(raw):
        parsed, bad = parse(index, entry)
        problems.extend(bad)
        if parsed is None:
            continue
        if parsed.id in seen:
            problems.append(NetworkProblem(index, parsed.id, "id", f"duplicate id (first at "
                                           f"{section}[{seen[parsed.id]}])", section))
            continue
        seen[parsed.id] = index
        found.append(parsed)
    return found


def _book_van_sites(sites: Sequence[tuple[int, Site]], raw_vehicles: Sequence[Any],
                    vehicles: Sequence[VehicleSpec]) -> list[NetworkProblem]:
    """A site of kind book_van is driven by exactly one book_van vehicle: its loans are
    branch events from that one van, and planning needs to know where the van is."""
    problems: list[NetworkProblem] = []
    driven_by: dict[str, list[str]] = {}
    for vehicle in vehicles:
        if vehicle.site:
            driven_by.setdefault(vehicle.site, []).append(vehicle.id)
    index_of: dict[Any, int] = {}
    named: set[Any] = set()
    for n, entry in enumerate(raw_vehicles):
        if isinstance(entry, Mapping):
            ident = entry.get("id")
            index_of.setdefault(ident.strip() if isinstance(ident, str) else ident, n)
            named.add(entry.get("site"))
    for index, site in sites:
        if site.kind != "book_van":
            continue
        drivers = driven_by.get(site.code, [])
        if not drivers and site.code not in named:
            problems.append(NetworkProblem(index, site.code, "kind",
                                           "a book_van site needs a book_van vehicle whose "
                                           "`site` it is"))
        for extra in drivers[1:]:
            problems.append(NetworkProblem(
                index_of.get(extra), extra, "site",
                f"{site.code!r} is already the site of vehicle {drivers[0]!r} (a book van "
                f"site has exactly one vehicle)", "vehicles"))
    return problems


def _hhmm(check: _SiteCheck, value: Any, where: str) -> str | None:
    if not isinstance(value, str) or not _HHMM.match(value):
        check.bad(where, f"{value!r} is not a time of day as HH:MM (00:00-23:59)")
        return None
    return value


def _vehicle(index: int, raw: Any, sites: Mapping[str, str],
             ) -> tuple[VehicleSpec | None, list[NetworkProblem]]:
    if not isinstance(raw, Mapping):
        return None, [NetworkProblem(index, None, "vehicle", "must be a JSON object",
                                     "vehicles")]
    ident = raw.get("id")
    check = _SiteCheck(index, ident.strip() if isinstance(ident, str) else None,
                       section="vehicles")
    vid = _text(check, raw, "id")
    name = _text(check, raw, "name")
    kind = raw.get("kind", "van")
    if kind not in VEHICLE_KINDS:
        check.bad("kind", f"unknown kind {kind!r} (one of {', '.join(VEHICLE_KINDS)})")
    depot = _text(check, raw, "depot")
    if depot is not None and sites.get(depot) != "hub":
        check.bad("depot", f"{depot!r} is not a hub of the network")
    capacity = raw.get("capacity_crates")
    if isinstance(capacity, bool) or not isinstance(capacity, int) or not 1 <= capacity <= 1000:
        check.bad("capacity_crates", f"must be a whole number of crates 1..1000, not "
                                     f"{capacity!r}")
        capacity = 1
    shift = raw.get("shift")
    start = end = "00:00"
    if not isinstance(shift, list) or len(shift) != 2:
        check.bad("shift", f'must be a ["HH:MM", "HH:MM"] pair, not {shift!r}')
    else:
        s0, s1 = _hhmm(check, shift[0], "shift[0]"), _hhmm(check, shift[1], "shift[1]")
        if s0 and s1:
            if _minutes(s0) >= _minutes(s1):
                check.bad("shift", f"starts at {s0} but ends at {s1}: start must be before end")
            start, end = s0, s1
    days_raw = raw.get("days", list(DEFAULT_VEHICLE_DAYS))
    days = _courier_days(check, days_raw, "days")
    active = _flag(check, raw, "active")
    van_site = raw.get("site")
    timetable: list[BookVanDay] = []
    if kind == "book_van":
        if not isinstance(van_site, str) or sites.get(van_site) != "book_van":
            check.bad("site", f"a book van names its own site of kind book_van, not "
                              f"{van_site!r}")
            van_site = None
        timetable = _timetable(check, raw.get("timetable", []), sites)
    elif van_site is not None or raw.get("timetable"):
        check.bad("site" if van_site is not None else "timetable",
                  "only a book_van has its own site and timetable")
    if check.problems:
        return None, check.problems
    assert vid and name and depot
    return VehicleSpec(id=vid, name=name, kind=str(kind), depot=depot,
                       capacity_crates=capacity, shift_start=start, shift_end=end,
                       days=days, active=active, site=van_site, timetable=timetable), []


def _timetable(check: _SiteCheck, raw: Any, sites: Mapping[str, str]) -> list[BookVanDay]:
    if not isinstance(raw, list):
        check.bad("timetable", "must be a list of {day, week?, stops}")
        return []
    days: list[BookVanDay] = []
    for n, entry in enumerate(raw):
        at = f"timetable[{n}]"
        if not isinstance(entry, Mapping):
            check.bad(at, "must be a JSON object")
            continue
        day = entry.get("day")
        if day not in WEEKDAYS:
            check.bad(f"{at}.day", f"unknown weekday {day!r} (one of {', '.join(WEEKDAYS)})")
        week = entry.get("week")
        if week is not None and (isinstance(week, bool) or not isinstance(week, int)
                                 or not 1 <= week <= 5):
            check.bad(f"{at}.week", f"must be 1..5 or null, not {week!r}")
        stops_raw = entry.get("stops")
        stops: list[BookVanStop] = []
        if not isinstance(stops_raw, list) or not stops_raw:
            check.bad(f"{at}.stops", "must be a non-empty list of {site, arrive, depart}")
            stops_raw = []
        last = -1
        for k, stop in enumerate(stops_raw):
            where = f"{at}.stops[{k}]"
            if not isinstance(stop, Mapping):
                check.bad(where, "must be a JSON object")
                continue
            code = stop.get("site")
            if not isinstance(code, str) or sites.get(code) != "bookmobile_stop":
                check.bad(f"{where}.site", f"{code!r} is not a bookmobile_stop of the network")
            arrive = _hhmm(check, stop.get("arrive"), f"{where}.arrive")
            depart = _hhmm(check, stop.get("depart"), f"{where}.depart")
            if arrive and depart:
                if _minutes(arrive) >= _minutes(depart):
                    check.bad(where, f"arrives {arrive} but departs {depart}")
                elif _minutes(arrive) < last:
                    check.bad(where, "stops must be in time order")
                last = _minutes(depart)
                stops.append(BookVanStop(str(code), arrive, depart))
        days.append(BookVanDay(str(day), week, stops))
    return days


def _driver(index: int, raw: Any, vehicles: Collection[str],
            ) -> tuple[DriverSpec | None, list[NetworkProblem]]:
    if not isinstance(raw, Mapping):
        return None, [NetworkProblem(index, None, "driver", "must be a JSON object",
                                     "drivers")]
    ident = raw.get("id")
    check = _SiteCheck(index, ident.strip() if isinstance(ident, str) else None,
                       section="drivers")
    did = _text(check, raw, "id")
    name = _text(check, raw, "name")
    vehicle = raw.get("vehicle")
    if vehicle is not None and vehicle not in vehicles:
        check.bad("vehicle", f"{vehicle!r} is not a vehicle of the network")
    phone = raw.get("phone")
    if phone is not None and not isinstance(phone, str):
        check.bad("phone", f"must be a string or null, not {phone!r}")
    active = _flag(check, raw, "active")
    if check.problems:
        return None, check.problems
    assert did and name
    return DriverSpec(id=did, name=name, vehicle=vehicle, phone=phone, active=active), []


def _single(found: tuple[Any, list[NetworkProblem]]) -> Any:
    """One entry validated on its own (an HTTP edit): its problems' paths are inside it."""
    value, problems = found
    if problems:
        raise InvalidNetwork([NetworkProblem(-1, p.site, p.field, p.message, p.section)
                              for p in problems])
    return value


def validate_site(raw: Any, *, hubs: Mapping[str, str]) -> Site:
    """One site on its own (a dispatcher's edit); `hubs` maps known codes to their kinds,
    so its hub is checked (a new hub may serve itself)."""
    site: Site = _single(_site(-1, raw))
    kinds = {**hubs, site.code: site.kind}
    if kinds.get(site.hub) != "hub":
        raise InvalidNetwork([NetworkProblem(-1, site.code, "hub",
                                             f"{site.hub!r} is not a hub of the network")])
    return site


def validate_vehicle(raw: Any, *, sites: Mapping[str, str]) -> VehicleSpec:
    """One vehicle on its own; `sites` maps the network's codes to their kinds."""
    vehicle: VehicleSpec = _single(_vehicle(-1, raw, sites))
    return vehicle


def validate_driver(raw: Any, *, vehicles: Collection[str]) -> DriverSpec:
    """One driver on its own; `vehicles` are the network's vehicle ids."""
    driver: DriverSpec = _single(_driver(-1, raw, vehicles))
    return driver


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


# --- legs and crates ----------------------------------------------------------------------


def next_leg(at: str, to: str, hub_of: Mapping[str, str], *, direct: bool = False) -> str | None:
    """The next site an item waiting at `at` goes to on its way to `to` (None: it is there).

    Hub and spoke: a branch sends to its hub; a hub sends to the destination when it serves
    it, else to the destination's hub. `direct` (one route visits `at` and then `to` on the
    same day) skips the hub.
    """
    if at == to:
        return None
    if direct:
        return to
    home_hub = hub_of.get(at, at)
    if home_hub != at:
        return home_hub
    return to if hub_of.get(to, to) == at else hub_of.get(to, to)


def crate_barcode(serial: int) -> str:
    """`CR` + a 7-digit serial + a Luhn check digit: a mistyped crate label is caught."""
    digits = f"{serial:07d}"
    return f"CR{digits}{luhn_digit(digits)}"


def luhn_digit(digits: str) -> int:
    """The Luhn (mod 10) check digit for a string of digits."""
    total = 0
    for n, char in enumerate(reversed(digits)):
        d = int(char)
        if n % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10


def crates_for(items: int, capacity: int) -> int:
    """Crates `items` loose items fill."""
    return -(-items // capacity) if items > 0 else 0


@dataclass(frozen=True)
class OpenCrate:
    crate_id: str
    destination: str
    items: int


@dataclass
class Packing:
    """Which crate each shipment goes into; `new` lists crates to create (id, destination)."""

    into: dict[str, str] = field(default_factory=dict)  # shipment id -> crate id
    new: list[tuple[str, str]] = field(default_factory=list)
    filled: dict[str, int] = field(default_factory=dict)  # crate id -> items after packing


def pack(waiting: Sequence[tuple[str, str]], open_crates: Sequence[OpenCrate], capacity: int,
         new_crate_id: Callable[[], str]) -> Packing:
    """Put each (shipment id, next site) into a crate for that next site.

    Open crates for the same next site are filled first, then new ones; a crate never
    holds more than `capacity` items. Order is kept, so the oldest items go first.
    """
    packing = Packing()
    current: dict[str, OpenCrate] = {}
    for existing in open_crates:
        if existing.items < capacity and existing.destination not in current:
            current[existing.destination] = existing
            packing.filled[existing.crate_id] = existing.items
    for shipment_id, destination in waiting:
        found = current.get(destination)
        if found is None or packing.filled[found.crate_id] >= capacity:
            found = OpenCrate(new_crate_id(), destination, 0)
            current[destination] = found
            packing.new.append((found.crate_id, destination))
            packing.filled[found.crate_id] = 0
        packing.into[shipment_id] = found.crate_id
        packing.filled[found.crate_id] += 1
    return packing


def apply_crate_scan(status: str, kind: str) -> str | None:
    """A crate's status after a pack/seal/load/unload scan, or None when it makes no sense."""
    moves = {
        ("pack", "open"): "open",
        ("seal", "open"): "sealed",
        ("seal", "sealed"): "sealed",
        ("load", "open"): "loaded",
        ("load", "sealed"): "loaded",
        ("unload", "loaded"): "unloaded",
    }
    return moves.get((kind, status))


# --- the daily plan -----------------------------------------------------------------------


@dataclass(frozen=True)
class PlanSite:
    """What planning needs of a site."""

    code: str
    hub: str
    opening_hours: Mapping[str, Sequence[Sequence[str]]]
    courier_days: Sequence[str]
    service_minutes: int
    active: bool = True


@dataclass(frozen=True)
class Demand:
    """Crates for one site on the planned day, and how long its oldest item has waited."""

    drop: int  # crates at the hub for this site
    collect: int  # crates (or loose items, in crates) waiting at the site
    oldest: datetime | None  # oldest item waiting at the site or at the hub for it


@dataclass(frozen=True)
class PlanVehicle:
    vehicle_id: str
    depot: str
    capacity: int
    shift_start: str
    shift_end: str
    days: Sequence[str]


@dataclass(frozen=True)
class StopNeed:
    """A stop to plan: `part` > 1 when a site's crates need more than one van load."""

    site: str
    part: int
    delivery: int
    pickup: int
    service_s: int
    windows: tuple[tuple[int, int], ...]
    overdue: bool


@dataclass(frozen=True)
class Unplanned:
    site: str
    reason: str


def seconds_of(hhmm: str) -> int:
    """Seconds from midnight of an "HH:MM" time."""
    return _minutes(hhmm) * 60


def weekday_of(day: date) -> str:
    return WEEKDAYS[day.weekday()]


def stops_to_plan(day: date, hub: str, sites: Mapping[str, PlanSite],
                  demand: Mapping[str, Demand], vehicles: Sequence[PlanVehicle], *,
                  now: datetime, target: timedelta,
                  windows: Callable[[PlanSite, str], tuple[tuple[int, int], ...]],
                  ) -> tuple[list[StopNeed], list[Unplanned]]:
    """Which sites the hub's vans visit on `day`, with what, and which cannot be planned.

    A site is a stop when it has crates to drop or collect and it is its courier day, or
    when an item has waited for it (there, or at the hub) longer than `target` whatever
    the day. A site needing more crates than the largest van carries becomes several
    stops. A site closed all that day, or inactive, is listed as unplanned with the reason.
    """
    day_name = weekday_of(day)
    running = [v for v in vehicles if day_name in v.days]
    largest = max((v.capacity for v in running), default=0)
    needs: list[StopNeed] = []
    unplanned: list[Unplanned] = []
    for code in sorted(demand):
        want = demand[code]
        site = sites.get(code)
        if code == hub or want.drop + want.collect == 0:
            continue
        if site is None or site.hub != hub:
            continue
        overdue = want.oldest is not None and now - want.oldest > target
        if day_name not in site.courier_days and not overdue:
            continue
        if not site.active:
            unplanned.append(Unplanned(code, "the site is inactive"))
            continue
        if not running:
            unplanned.append(Unplanned(code, f"no van of hub {hub} runs on {day_name}"))
            continue
        service_s = site.service_minutes * 60
        site_windows = windows(site, day_name)
        if not site_windows:
            courier = " (courier day)" if day_name in site.courier_days else ""
            unplanned.append(Unplanned(code, f"closed all day on {day_name}{courier}"))
            continue
        parts = max(crates_for(want.drop, largest), crates_for(want.collect, largest), 1)
        for part in range(parts):
            drop = min(largest, max(0, want.drop - part * largest))
            collect = min(largest, max(0, want.collect - part * largest))
            needs.append(StopNeed(code, part + 1, drop, collect, service_s, site_windows,
                                  overdue))
    return needs, unplanned


def route_id_for(day: date, vehicle: str) -> str:
    """One route per vehicle and day; re-planning the day revises it under the same id."""
    return f"R-{day:%Y%m%d}-{vehicle}"


def stability(previous: Mapping[str, str], current: Mapping[str, str]) -> dict[str, Any]:
    """How many stops planned before kept their vehicle (sites in both plans only)."""
    common = [site for site in current if site in previous]
    kept = sum(1 for site in common if previous[site] == current[site])
    return {"compared": len(common), "kept": kept, "moved": len(common) - kept,
            "kept_share": round(kept / len(common), 4) if common else None}


StopStatus = Literal["pending", "arrived", "served", "unserved"]


def stop_after_scan(status: str, kind: str) -> str:
    """A stop's progress after a scan there: arrive → arrived; depart → served."""
    if status in ("served", "unserved"):
        return status
    if kind == "depart":
        return "served"
    return "arrived"


def route_finished(stop_statuses: Sequence[str]) -> bool:
    """A route is complete when every stop was served or reported unserved."""
    return all(s in ("served", "unserved") for s in stop_statuses)


def timetable_applies(entry: Mapping[str, Any], day: date) -> bool:
    """A book van's timetable entry runs on `day`: its weekday, and its week of the month
    (week n = the n-th such weekday; none = every week)."""
    if entry.get("day") != weekday_of(day):
        return False
    week = entry.get("week")
    return week is None or (day.day - 1) // 7 + 1 == week
