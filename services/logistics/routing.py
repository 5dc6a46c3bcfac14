"""The routing model, free of I/O and of any solver: a day's problem, its routes, their check.

A `Problem` is what a solver needs (stops with crates to drop and collect, time windows,
service times; vehicles with capacity and a shift; travel matrices). A solver (see
solver.py) only proposes, per vehicle, an order of stops; `schedule` computes the times
from the problem itself and `check` verifies a proposal independently of the solver —
capacity, windows, shift, every stop served once — so no plan reaches a driver on the
solver's word alone.

Units: times are whole seconds from midnight of the planned day (durations in seconds);
distances are whole metres. VRPLIB instances use their own units, scaled to integers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from services.logistics.domain import haversine_km


@dataclass(frozen=True)
class Window:
    """When service may begin at a stop: [open, close], seconds from midnight."""

    open: int
    close: int


@dataclass(frozen=True)
class Stop:
    """One site to visit: crates to drop (loaded at the depot) and to collect (to the depot).

    `windows` empty means any time within the vehicle's shift. `key` names the stop
    (a site code, or a client number for a VRPLIB instance).
    """

    key: str
    delivery: int
    pickup: int
    service: int
    windows: tuple[Window, ...] = ()
    required: bool = True
    #: What leaving an optional stop out costs (same units as `Problem.distance`).
    prize: int = 0


@dataclass(frozen=True)
class Vehicle:
    """One vehicle for the day: leaves its depot no earlier than `start`, back by `end`."""

    key: str
    capacity: int
    depot: int  # index into Problem.depots
    start: int
    end: int


@dataclass(frozen=True)
class Problem:
    """A day's routing problem. Locations are the depots first, then the stops, in order.

    `distance` is what the plan minimises (summed over the edges driven); `duration` is the
    travel time used for windows and shifts. `previous` maps a stop key to the vehicle key
    that served it in the plan being replaced; a solver adds `moved_penalty` to the cost of
    serving such a stop with another vehicle, which keeps routes stable where it costs
    little.
    """

    depots: tuple[str, ...]
    stops: tuple[Stop, ...]
    vehicles: tuple[Vehicle, ...]
    distance: Sequence[Sequence[int]]
    duration: Sequence[Sequence[int]]
    previous: Mapping[str, str] = field(default_factory=dict)
    moved_penalty: int = 0

    def location(self, stop: int) -> int:
        """The matrix index of stop number `stop`."""
        return len(self.depots) + stop


@dataclass(frozen=True)
class Visit:
    """One stop on a scheduled route: when the vehicle arrives, starts and ends service."""

    stop: int  # index into Problem.stops
    window: int | None  # index into the stop's windows; None when it has none
    arrival: int
    start: int
    departure: int
    load: int  # crates on board when leaving


@dataclass(frozen=True)
class Route:
    """One vehicle's day as computed by `schedule`."""

    vehicle: int  # index into Problem.vehicles
    visits: tuple[Visit, ...]
    start: int  # leaves the depot
    end: int  # back at the depot
    distance: int
    duration: int  # travel time only
    initial_load: int  # crates loaded at the depot


@dataclass(frozen=True)
class Violation:
    """One reason a proposed plan is not feasible."""

    kind: str  # capacity | window | shift | unserved | served_twice | unknown_stop | ...
    message: str
    vehicle: int | None = None
    stop: int | None = None


@dataclass(frozen=True)
class Proposal:
    """What a solver proposes: per vehicle index, its stops in visiting order."""

    sequences: Mapping[int, Sequence[int]]
    cost: int | None = None  # the solver's own objective, for reporting only
    #: The solver's own verdict; `check` decides, this only says whether to try again.
    feasible: bool = True


# --- schedule and check --------------------------------------------------------------------


def schedule(problem: Problem, vehicle: int, sequence: Sequence[int]) -> Route:
    """The times of one vehicle's route, computed from the problem alone.

    The vehicle leaves its depot at its shift start with every delivery of the route on
    board; at each stop service begins at the first window still open on arrival (it
    waits for a window that has not opened yet); back at the depot after the last stop.
    A stop whose windows have all closed keeps its late start, for `check` to report.
    """
    v = problem.vehicles[vehicle]
    depot = v.depot
    here = depot
    clock = v.start
    load = sum(problem.stops[i].delivery for i in sequence)
    initial = load
    distance = travel = 0
    visits: list[Visit] = []
    for i in sequence:
        stop = problem.stops[i]
        there = problem.location(i)
        distance += problem.distance[here][there]
        travel += problem.duration[here][there]
        arrival = clock + problem.duration[here][there]
        chosen: int | None = None
        start = arrival
        for n, window in enumerate(stop.windows):
            if arrival <= window.close:
                chosen, start = n, max(arrival, window.open)
                break
        else:
            if stop.windows:
                chosen = len(stop.windows) - 1
        load += stop.pickup - stop.delivery
        clock = start + stop.service
        visits.append(Visit(i, chosen, arrival, start, clock, load))
        here = there
    distance += problem.distance[here][depot]
    travel += problem.duration[here][depot]
    end = clock + problem.duration[here][depot]
    return Route(vehicle, tuple(visits), v.start, end, distance, travel, initial)


def check(problem: Problem, proposal: Proposal) -> list[Violation]:
    """Every reason the proposal is not a feasible plan of `problem`; empty when it is.

    Independent of any solver: capacity on leaving the depot and after every stop, each
    service starting inside one of its stop's windows, every vehicle back by its shift
    end, every required stop served exactly once, indices that exist.
    """
    found: list[Violation] = []
    served: dict[int, int] = {}
    for vehicle, sequence in proposal.sequences.items():
        if not 0 <= vehicle < len(problem.vehicles):
            found.append(Violation("unknown_vehicle", f"no vehicle number {vehicle}",
                                   vehicle=vehicle))
            continue
        v = problem.vehicles[vehicle]
        bad = [i for i in sequence if not 0 <= i < len(problem.stops)]
        if bad:
            found.append(Violation("unknown_stop", f"{v.key}: no stop number {bad[0]}",
                                   vehicle=vehicle, stop=bad[0]))
            continue
        for i in sequence:
            served[i] = served.get(i, 0) + 1
        if not sequence:
            continue
        route = schedule(problem, vehicle, sequence)
        if route.initial_load > v.capacity:
            found.append(Violation(
                "capacity", f"{v.key} leaves the depot with {route.initial_load} crates; "
                            f"it carries {v.capacity}", vehicle=vehicle))
        for visit in route.visits:
            stop = problem.stops[visit.stop]
            if visit.load > v.capacity:
                found.append(Violation(
                    "capacity", f"{v.key} carries {visit.load} crates after {stop.key}; "
                                f"it carries {v.capacity}", vehicle=vehicle, stop=visit.stop))
            if stop.windows and not any(w.open <= visit.start <= w.close
                                        for w in stop.windows):
                found.append(Violation(
                    "window", f"{v.key} starts at {stop.key} at {_clock(visit.start)}, outside "
                              f"{', '.join(_span(w) for w in stop.windows)}",
                    vehicle=vehicle, stop=visit.stop))
        if route.end > v.end:
            found.append(Violation(
                "shift", f"{v.key} is back at {_clock(route.end)}, after its shift ends at "
                         f"{_clock(v.end)}", vehicle=vehicle))
    for i, stop in enumerate(problem.stops):
        times = served.get(i, 0)
        if times > 1:
            found.append(Violation("served_twice", f"{stop.key} is served {times} times",
                                   stop=i))
        elif times == 0 and stop.required:
            found.append(Violation("unserved", f"{stop.key} is not served", stop=i))
    return found


def _clock(seconds: int) -> str:
    """Seconds from midnight as H:MM (or a day count beyond midnight, for benchmarks)."""
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}"
    return f"{text}+{days}d" if days else text


def _span(window: Window) -> str:
    return f"{_clock(window.open)}-{_clock(window.close)}"


def windows_for(opening_hours: Mapping[str, Sequence[Sequence[str]]], weekday: str,
                service: int) -> tuple[Window, ...]:
    """When service may begin on `weekday`: it starts at or after opening and ends by
    closing, so each opening interval [open, close] gives [open, close - service];
    an interval shorter than the service gives none (a closed day gives none)."""
    found = []
    for opens, closes in opening_hours.get(weekday, []):
        start, end = _seconds(opens), _seconds(closes) - service
        if start <= end:
            found.append(Window(start, end))
    return tuple(found)


def _seconds(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 3600 + int(minutes) * 60


def travel_matrices(coords: Sequence[tuple[float, float]], road_factor: float,
                    speed_kmh: float) -> tuple[list[list[int]], list[list[int]]]:
    """(metres, seconds) between every pair of (lat, lon): the great-circle distance
    stretched by the road factor, driven at the mean speed."""
    metres: list[list[int]] = []
    seconds: list[list[int]] = []
    for lat1, lon1 in coords:
        row_m: list[int] = []
        row_s: list[int] = []
        for lat2, lon2 in coords:
            km = haversine_km(lat1, lon1, lat2, lon2) * road_factor
            row_m.append(round(km * 1000))
            row_s.append(round(km / speed_kmh * 3600))
        metres.append(row_m)
        seconds.append(row_s)
    return metres, seconds


def trim(problem: Problem, proposal: Proposal) -> Proposal:
    """The proposal with stops taken out of each route until the route passes `check`.

    The last resort when the solver returns no feasible plan even with every stop
    optional: a stop named by a capacity or window violation goes first, else the last
    stop (a late return). What is taken out is simply unserved, and listed as such.
    """
    kept: dict[int, list[int]] = {}
    for vehicle, sequence in proposal.sequences.items():
        route = list(sequence)
        while route:
            alone = replace(problem, stops=tuple(replace(s, required=False)
                                                 for s in problem.stops))
            violations = check(alone, Proposal({vehicle: route}))
            if not violations:
                break
            culprit = next((v.stop for v in violations if v.stop is not None
                            and v.stop in route), None)
            route.remove(culprit if culprit is not None else route[-1])
        kept[vehicle] = route
    return Proposal(kept, cost=None, feasible=True)
