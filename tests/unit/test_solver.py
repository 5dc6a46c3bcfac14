"""The PyVRP adapter: what it proposes passes our own check; stability; infeasible input."""

from __future__ import annotations

import asyncio

import pytest

from devtools import routes_bench
from services.logistics import routing, solver
from services.logistics.routing import Problem, Proposal, Stop, Vehicle, Window

H = 3600


def grid_problem(previous: dict[str, str] | None = None, penalty: int = 0) -> Problem:
    """A depot and 8 stops on a 3x3 grid, two vans; one stop has a lunch break."""
    points = [(x, y) for x in range(3) for y in range(3)]
    minutes = [[(abs(a[0] - b[0]) + abs(a[1] - b[1])) * 900 for b in points] for a in points]
    stops = tuple(
        Stop(f"S{i}", delivery=2, pickup=1, service=300,
             windows=(Window(8 * H, 11 * H), Window(13 * H, 16 * H)) if i == 4
             else (Window(7 * H, 17 * H),))
        for i in range(1, 9))
    return Problem(depots=("HUB",), stops=stops,
                   vehicles=(Vehicle("V1", 10, 0, 7 * H, 18 * H),
                             Vehicle("V2", 10, 0, 7 * H, 18 * H)),
                   distance=minutes, duration=minutes, previous=previous or {},
                   moved_penalty=penalty)


def assignment(problem: Problem, proposal: Proposal) -> dict[str, str]:
    return {problem.stops[i].key: problem.vehicles[v].key
            for v, seq in proposal.sequences.items() for i in seq}


def test_a_proposal_serves_every_stop_and_passes_our_check() -> None:
    problem = grid_problem()
    proposal = solver.solve(problem, seconds=0.5, seed=1)
    assert proposal.feasible
    assert routing.check(problem, proposal) == []
    assert sorted(assignment(problem, proposal)) == [f"S{i}" for i in range(1, 9)]


def test_the_same_seed_gives_the_same_plan() -> None:
    problem = grid_problem()
    one = solver.solve(problem, seconds=0.3, seed=3)
    two = solver.solve(problem, seconds=0.3, seed=3)
    assert {k: list(v) for k, v in one.sequences.items()} == {
        k: list(v) for k, v in two.sequences.items()}


def test_a_previous_plan_is_kept_when_moving_costs_more_than_it_saves() -> None:
    problem = grid_problem()
    first = assignment(problem, solver.solve(problem, seconds=0.5, seed=1))
    # a made-up previous plan: every stop on V2 (over capacity for one van on its own,
    # so some must move); a penalty above any detour keeps as many as fit on V2
    previous = {key: "V2" for key in first}
    stable = grid_problem(previous, penalty=3 * H)
    proposal = solver.solve(stable, seconds=0.5, seed=1)
    assert routing.check(stable, proposal) == []
    kept = sum(1 for key, van in assignment(stable, proposal).items() if van == "V2")
    assert kept == 5  # 10 crates out ÷ 2 per stop: V2 takes 5 of the 8, the most it can


@pytest.mark.filterwarnings("ignore:.*penalty parameter has reached its maximum")
def test_an_impossible_stop_is_reported_not_raised() -> None:
    problem = grid_problem()
    # one more stop where S1 is, wanting more crates than any van carries
    grown = [[*row, row[1]] for row in problem.distance]
    grown.append([*grown[1][:-1], 0])
    too_big = Problem(depots=problem.depots,
                      stops=(*problem.stops, Stop("HUGE", 50, 0, 0)),
                      vehicles=problem.vehicles, distance=grown, duration=grown)
    proposal = solver.solve(too_big, seconds=0.3)
    assert not proposal.feasible or routing.check(too_big, proposal)


def test_solving_in_a_separate_process() -> None:
    problem = grid_problem()
    proposal = asyncio.run(solver.solve_in_process(problem, 0.3, 1))
    assert routing.check(problem, proposal) == []


def test_a_vrplib_instance_through_the_same_adapter() -> None:
    instance = routes_bench.read("C101")
    assert len(instance.problem.stops) == 100 and len(instance.problem.vehicles) == 25
    outcome = routes_bench.run_one(instance, seconds=1.0)
    assert outcome.feasible and outcome.gap_pct is not None
    assert outcome.gap_pct < 5  # C101 is easy: best-known 827.3
