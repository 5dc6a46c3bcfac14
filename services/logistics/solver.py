"""The adapter between our routing model (routing.py) and PyVRP, the solver we use.

PyVRP (MIT, pinned in pyproject.toml) changes its API between minor releases, so it is
imported here only: the rest of logistics speaks `routing.Problem` and gets a
`routing.Proposal` back, which `routing.check` verifies before anyone sees it.

Mapping: one PyVRP vehicle type per vehicle (`num_available=1`), one depot per depot,
clients with simultaneous delivery and pickup (crates dropped and collected by the same
van). A stop with several windows (a lunch break) becomes a mutually exclusive client
group, one client per window, so exactly one of them is visited. The objective is the
`distance` matrix; `duration` only drives time windows and shifts. Stability: with a
previous plan, each vehicle gets its own routing profile whose distance adds
`moved_penalty` to every edge into a stop another vehicle served before.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from services.logistics.routing import Problem, Proposal, Stop

#: PyVRP's "unconstrained" time.
_NO_LIMIT = int(np.iinfo(np.int64).max)


def _matrix(rows: Sequence[Sequence[int]]) -> Any:
    return np.asarray(rows, dtype=np.int64)


def to_pyvrp(problem: Problem) -> tuple[Any, list[int]]:
    """PyVRP's ProblemData for `problem`, and for each PyVRP client the stop it stands for."""
    import pyvrp

    n_depots = len(problem.depots)
    locations = [pyvrp.Location(0, 0, name=key) for key in problem.depots]
    locations += [pyvrp.Location(0, 0, name=stop.key) for stop in problem.stops]
    depots = [pyvrp.Depot(location=i, name=key) for i, key in enumerate(problem.depots)]
    clients: list[Any] = []
    owner: list[int] = []
    groups: list[Any] = []
    for i, stop in enumerate(problem.stops):
        location = n_depots + i
        windows = [(w.open, w.close) for w in stop.windows] or [(0, _NO_LIMIT)]

        def client(early: int, late: int, required: bool, group: int | None,
                   stop: Stop = stop, location: int = location) -> Any:
            return pyvrp.Client(location=location, delivery=[stop.delivery],
                                pickup=[stop.pickup], service_duration=stop.service,
                                tw_early=early, tw_late=late, prize=stop.prize,
                                required=required, group=group, name=stop.key)

        if len(windows) == 1:
            clients.append(client(*windows[0], stop.required, None))
            owner.append(i)
            continue
        members = []
        for early, late in windows:
            members.append(len(clients))
            clients.append(client(early, late, False, len(groups)))
            owner.append(i)
        groups.append(pyvrp.ClientGroup(members, required=stop.required))

    distance = _matrix(problem.distance)
    duration = _matrix(problem.duration)
    stable = bool(problem.previous) and problem.moved_penalty > 0
    vehicle_types = [
        pyvrp.VehicleType(num_available=1, capacity=[v.capacity], start_depot=v.depot,
                          end_depot=v.depot, tw_early=v.start, tw_late=v.end,
                          unit_distance_cost=1, unit_duration_cost=0,
                          profile=n if stable else 0, name=v.key)
        for n, v in enumerate(problem.vehicles)
    ]
    if stable:
        distances = []
        for v in problem.vehicles:
            penalised = distance.copy()
            for i, stop in enumerate(problem.stops):
                before = problem.previous.get(stop.key)
                if before is not None and before != v.key:
                    penalised[:, n_depots + i] += problem.moved_penalty
                    penalised[n_depots + i, n_depots + i] = 0
            distances.append(penalised)
        durations = [duration] * len(problem.vehicles)
    else:
        distances, durations = [distance], [duration]
    data = pyvrp.ProblemData(locations, clients, depots, vehicle_types, distances, durations,
                             groups)
    return data, owner


def solve(problem: Problem, *, seconds: float, seed: int = 0) -> Proposal:
    """PyVRP's best plan found within `seconds` (same input and seed, same plan).

    An infeasible best (PyVRP found no plan serving every required stop within windows,
    shifts and capacity) comes back with `feasible=False`; the caller decides what to
    relax. A problem without stops or vehicles gets an empty proposal.
    """
    if not problem.stops or not problem.vehicles:
        return Proposal({}, cost=0, feasible=not any(s.required for s in problem.stops))
    import pyvrp
    from pyvrp.stop import MaxRuntime

    data, owner = to_pyvrp(problem)
    result = pyvrp.solve(data, MaxRuntime(seconds), seed=seed, collect_stats=False)
    best = result.best
    sequences: dict[int, list[int]] = {}
    for route in best.routes():
        stops = [owner[activity.idx] for activity in route if activity.is_client()]
        if stops:
            sequences[route.vehicle_type()] = stops
    return Proposal(sequences, cost=int(result.cost()) if best.is_feasible() else None,
                    feasible=bool(best.is_feasible()))


_pool: ProcessPoolExecutor | None = None


def _executor() -> ProcessPoolExecutor:
    """One worker process, started on first use and kept: the import costs ~0.3 s."""
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(max_workers=1,
                                    mp_context=multiprocessing.get_context("spawn"))
    return _pool


def _solve_kw(problem: Problem, seconds: float, seed: int) -> Proposal:
    return solve(problem, seconds=seconds, seed=seed)


async def solve_in_process(problem: Problem, seconds: float, seed: int = 0) -> Proposal:
    """`solve` in a separate process: a search holds a CPU for its whole time limit, and
    the service's event loop (HTTP, consumers, relay) must keep running meanwhile."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor(), _solve_kw, problem, seconds, seed)
