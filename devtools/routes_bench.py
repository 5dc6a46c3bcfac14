"""`branchline routes bench`: the route planner on VRPLIB instances with best-known costs.

Each instance is read with vrplib, turned into our own `routing.Problem`, solved through
the same adapter the service uses (services/logistics/solver.py) and checked by the same
independent check (routing.check), so a gap printed here is the planner's, not PyVRP's
alone. Conventions as in the literature: CVRP (Uchoa et al. X set) distances rounded to
the nearest integer, fleet ⌈1.25·k⌉; Solomon and Gehring-Homberger VRPTW under the DIMACS
rule (distances and times truncated to one decimal, so scaled x10 here), fleet =
VEHICLES, objective = distance.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from services.logistics import routing, solver

HERE = Path(__file__).parent / "bench" / "vrp"
DEFAULT_INSTANCES = ("X-n101-k25", "X-n200-k36", "X-n251-k28", "C101", "RC101", "RC1_2_1")
_UNLIMITED = 10**9


@dataclass
class Instance:
    name: str
    problem: routing.Problem
    best_known: float
    scale: int  # our integer cost ÷ scale = the instance's cost


@dataclass
class Outcome:
    instance: str
    clients: int
    seconds: float
    cost: float | None
    best_known: float
    gap_pct: float | None
    feasible: bool
    violations: int
    wall_s: float


def best_known(path: Path) -> float:
    """The cost on the .sol file's last `Cost X` line."""
    for line in reversed(path.read_text().splitlines()):
        if line.lower().startswith("cost"):
            return float(line.split()[1])
    raise ValueError(f"{path}: no 'Cost' line")


def read(name: str, folder: Path = HERE) -> Instance:
    """One VRPLIB instance as our routing problem."""
    import numpy as np
    import vrplib

    data: dict[str, Any] = vrplib.read_instance(str(folder / f"{name}.vrp"))
    weights = np.asarray(data["edge_weight"], dtype=float)
    demand = [int(d) for d in data["demand"]]
    capacity = int(data["capacity"])
    depots = [int(d) for d in np.atleast_1d(data["depot"])]
    if "time_window" in data:  # Solomon / Gehring-Homberger: DIMACS, one decimal
        scale = 10
        matrix = np.floor(weights * scale + 1e-9).astype(np.int64)
        windows = (np.asarray(data["time_window"], dtype=float) * scale).astype(np.int64)
        service = np.broadcast_to(np.asarray(data.get("service_time", 0), dtype=float) * scale,
                                  (len(demand),)).astype(np.int64)
        fleet = int(data["vehicles"])
        start, end = int(windows[depots[0]][0]), int(windows[depots[0]][1])
    else:  # CVRP: nearest integer, no windows
        scale = 1
        matrix = np.rint(weights).astype(np.int64)
        windows = None
        service = np.zeros(len(demand), dtype=np.int64)
        found = re.search(r"-k(\d+)", name)
        fleet = math.ceil(1.25 * int(found.group(1))) if found else len(demand)
        start, end = 0, _UNLIMITED
    clients = [i for i in range(len(demand)) if i not in depots]
    order = depots + clients
    rows = matrix[np.ix_(order, order)].tolist()
    stops = tuple(
        routing.Stop(key=str(i), delivery=demand[i], pickup=0, service=int(service[i]),
                     windows=(routing.Window(int(windows[i][0]), int(windows[i][1])),)
                     if windows is not None else ())
        for i in clients)
    vehicles = tuple(routing.Vehicle(key=f"v{n}", capacity=capacity, depot=0, start=start,
                                     end=end) for n in range(fleet))
    problem = routing.Problem(depots=tuple(str(d) for d in depots), stops=stops,
                              vehicles=vehicles, distance=rows, duration=rows)
    return Instance(name, problem, best_known(folder / f"{name}.sol"), scale)


def run_one(instance: Instance, seconds: float, seed: int = 0) -> Outcome:
    started = time.monotonic()
    proposal = solver.solve(instance.problem, seconds=seconds, seed=seed)
    wall = time.monotonic() - started
    violations = routing.check(instance.problem, proposal)
    cost = sum(routing.schedule(instance.problem, v, seq).distance
               for v, seq in proposal.sequences.items()) / instance.scale
    feasible = not violations
    gap = 100 * (cost - instance.best_known) / instance.best_known if feasible else None
    return Outcome(instance.name, len(instance.problem.stops), seconds,
                   round(cost, 1) if feasible else None, instance.best_known,
                   round(gap, 2) if gap is not None else None, feasible, len(violations),
                   round(wall, 1))


def bench(names: Sequence[str], seconds: Sequence[float], folder: Path = HERE,
          seed: int = 0, out: Any = sys.stdout) -> list[Outcome]:
    """Solve every instance at every time limit, printing a row as each finishes."""
    instances = [read(name, folder) for name in names]
    total = len(instances) * len(seconds)
    print(f"{total} solves, {sum(seconds) * len(instances):.0f} s of search in all "
          f"(seed {seed})", file=out)
    print(f"{'instance':<12} {'n':>4} {'limit s':>7} {'cost':>10} {'best-known':>10} "
          f"{'gap %':>6} {'feasible':>8} {'wall s':>6}", file=out, flush=True)
    results = []
    for limit in seconds:
        for instance in instances:
            r = run_one(instance, limit, seed)
            results.append(r)
            cost = f"{r.cost:.1f}" if r.cost is not None else "-"
            gap = f"{r.gap_pct:.2f}" if r.gap_pct is not None else "-"
            print(f"{r.instance:<12} {r.clients:>4} {limit:>7g} {cost:>10} "
                  f"{r.best_known:>10g} {gap:>6} {'yes' if r.feasible else 'NO':>8} "
                  f"{r.wall_s:>6.1f}", file=out, flush=True)
        gaps = [r.gap_pct for r in results if r.seconds == limit and r.gap_pct is not None]
        feasible = sum(1 for r in results if r.seconds == limit and r.feasible)
        mean = f"{sum(gaps) / len(gaps):.2f} %" if gaps else "-"
        print(f"mean gap at {limit:g} s: {mean} ({feasible}/{len(instances)} feasible)\n",
              file=out, flush=True)
    return results


def main(names: Sequence[str], seconds: Sequence[float], folder: Path, seed: int,
         json_path: Path | None, reference: bool = False) -> int:
    if reference:
        reports = [plan_reference(limit, seed) for limit in seconds]
        if json_path is not None:
            json_path.write_text(json.dumps(reports, indent=2))
        return 0 if all(r["feasible"] for r in reports) else 1
    missing = [n for n in names if not (folder / f"{n}.vrp").exists()]
    if missing:
        print(f"error: no instance {', '.join(missing)} in {folder}", file=sys.stderr)
        return 2
    results = bench(names, seconds, folder, seed)
    if json_path is not None:
        json_path.write_text(json.dumps([asdict(r) for r in results], indent=2))
        print(f"results written to {json_path}")
    return 0 if all(r.feasible for r in results) else 1


# --- the reference network: a demanding day ------------------------------------------------


def reference_input(day: Any, demand_seed: int = 7) -> Any:
    """The reference network's planning input for `day` with crates at every site: 1-3
    to drop and 0-2 to collect (the 'every site has crates' day of the acceptance test),
    built with the service's own code minus the database."""
    import random
    from datetime import UTC, datetime

    from services.logistics import domain, handlers
    from services.logistics.models import Site, Vehicle
    from services.logistics.network import REFERENCE_NETWORK

    network = domain.parse_network(json.loads(REFERENCE_NETWORK.read_text()))
    now = datetime.now(UTC)
    sites = {s.code: Site(**{**asdict(s), "updated_at": now}) for s in network.sites}
    vehicles = [Vehicle(vehicle_id=v.id, name=v.name, kind=v.kind, depot=v.depot,
                        capacity_crates=v.capacity_crates, shift_start=v.shift_start,
                        shift_end=v.shift_end, days=list(v.days), site=v.site, timetable=[],
                        active=v.active, updated_at=now)
                for v in network.vehicles if v.kind == "van"]
    rng = random.Random(demand_seed)
    demand = {code: domain.Demand(drop=rng.randint(1, 3), collect=rng.randint(0, 2),
                                  oldest=now)
              for code, s in sites.items() if s.kind not in ("hub", "bookmobile_stop")}
    drivers = {d.vehicle: d.id for d in network.drivers if d.vehicle}
    return handlers.PlanningInput(day, "JX-HUB", sites, vehicles, drivers, demand, {})


def every_day_courier(data: Any) -> Any:
    """The same input with every site's courier day today: every site is a stop."""
    day_name = WEEKDAY[data.day.weekday()]
    for site in data.sites.values():
        if day_name not in site.courier_days:
            site.courier_days = [*site.courier_days, day_name]
    return data


WEEKDAY = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def plan_reference(seconds: float, seed: int = 0, out: Any = sys.stdout) -> dict[str, Any]:
    """Plan the reference network's demanding day, then re-plan it after a change (10
    more crates at 10 sites) with and without the stability penalty, and report time,
    routes, what was left out, and how many stops kept their van."""
    from datetime import UTC, date, datetime

    from services.logistics import domain, handlers
    from services.logistics.models import Route
    from shared.service.settings import Settings

    settings = Settings(route_seed=seed)
    data = every_day_courier(reference_input(date(2026, 12, 1)))
    now = datetime.now(UTC)
    built = handlers.build_problem(data, settings, now)
    started = time.monotonic()
    proposal = solver.solve(built.problem, seconds=seconds, seed=seed)
    wall = time.monotonic() - started
    violations = routing.check(built.problem, proposal)
    routes = {v: seq for v, seq in proposal.sequences.items() if seq}
    minutes = sum(routing.schedule(built.problem, v, s).duration for v, s in routes.items()) / 60
    first = {built.problem.stops[i].key: built.problem.vehicles[v].key
             for v, seq in routes.items() for i in seq}
    report: dict[str, Any] = {
        "sites": len(data.sites), "stops": len(built.problem.stops),
        "unplanned_before_solving": [asdict(u) for u in built.unplanned],
        "vans": len(built.problem.vehicles), "routes": len(routes),
        "feasible": not violations, "solve_s": round(wall, 1),
        "driving_min": round(minutes), "limit_s": seconds}
    print(f"reference network: {report['sites']} sites, {report['stops']} stops, "
          f"{report['vans']} vans: {report['routes']} routes, driving {report['driving_min']} "
          f"min, {'feasible' if report['feasible'] else 'INFEASIBLE'}, solved in "
          f"{report['solve_s']} s (limit {seconds:g} s)", file=out, flush=True)
    # a change: 10 sites get 2 more crates; re-plan with and without the stability penalty
    changed = list(data.demand)[::25][:10]
    for code in changed:
        d = data.demand[code]
        data.demand[code] = domain.Demand(d.drop + 2, d.collect, d.oldest)
    data.routes = {
        vehicle: Route(route_id=f"R-{vehicle}", date=data.day, hub="JX-HUB", vehicle=vehicle,
                       plan_id="P-1", stops=[{"site": key.split("#")[0],
                                              "part": int(key.split("#")[1])}
                                             for key, van in first.items() if van == vehicle])
        for vehicle in set(first.values())}
    for label, minutes_penalty in (("with", settings.route_stability_minutes), ("without", 0.0)):
        again = handlers.build_problem(
            data, settings.model_copy(update={"route_stability_minutes": minutes_penalty}),
            now)
        result = solver.solve(again.problem, seconds=seconds, seed=seed)
        seq = {v: s for v, s in result.sequences.items() if s}
        second = {again.problem.stops[i].key: again.problem.vehicles[v].key
                  for v, s in seq.items() for i in s}
        drive = sum(routing.schedule(again.problem, v, s).duration for v, s in seq.items()) / 60
        stable = domain.stability(first, second)
        report[f"replan_{label}_penalty"] = {**stable, "driving_min": round(drive),
                                             "feasible": not routing.check(again.problem,
                                                                           result)}
        print(f"re-plan after a change, {label} the stability penalty "
              f"({minutes_penalty:g} min): {stable['kept']}/{stable['compared']} stops kept "
              f"their van ({stable['kept_share']}), driving {round(drive)} min",
              file=out, flush=True)
    return report
