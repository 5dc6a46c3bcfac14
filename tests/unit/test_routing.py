"""Our own feasibility check and schedule: each kind of violation is caught, a good plan
passes, whatever the solver said."""

from __future__ import annotations

from services.logistics import routing
from services.logistics.routing import Problem, Proposal, Stop, Vehicle, Window

H = 3600


def line_problem(*, capacity: int = 10, end: int = 18 * H,
                 stops: tuple[Stop, ...] | None = None) -> Problem:
    """A depot and three stops on a line, 10 minutes apart."""
    stops = stops or (
        Stop("A", delivery=2, pickup=1, service=600, windows=(Window(8 * H, 12 * H),)),
        Stop("B", delivery=3, pickup=0, service=600,
             windows=(Window(9 * H, 10 * H), Window(14 * H, 16 * H))),
        Stop("C", delivery=0, pickup=4, service=600),
    )
    n = len(stops) + 1
    minutes = [[abs(i - j) * 600 for j in range(n)] for i in range(n)]
    return Problem(depots=("HUB",), stops=stops,
                   vehicles=(Vehicle("V1", capacity, 0, 7 * H, end),
                             Vehicle("V2", capacity, 0, 7 * H, end)),
                   distance=minutes, duration=minutes)


def kinds(problem: Problem, sequences: dict[int, list[int]]) -> list[str]:
    return [v.kind for v in routing.check(problem, Proposal(sequences))]


def test_schedule_waits_for_windows_and_tracks_the_load() -> None:
    problem = line_problem()
    route = routing.schedule(problem, 0, [0, 1, 2])
    a, b, c = route.visits
    assert (a.arrival, a.start, a.departure) == (7 * H + 600, 8 * H, 8 * H + 600)
    assert (b.start, b.window) == (9 * H, 0)  # waits for B's first window
    assert c.start == 9 * H + 1200
    assert route.initial_load == 5
    assert [v.load for v in route.visits] == [4, 1, 5]
    assert route.end == c.departure + 3 * 600
    assert route.distance == 600 * 6


def test_schedule_takes_the_afternoon_window_when_the_morning_is_gone() -> None:
    problem = line_problem()
    route = routing.schedule(problem, 0, [2, 0, 1])  # C, A, then B still in the morning
    assert route.visits[2].window == 0
    late = Problem(depots=problem.depots, stops=problem.stops,
                   vehicles=(Vehicle("V1", 10, 0, 11 * H, 18 * H),),
                   distance=problem.distance, duration=problem.duration)
    b = routing.schedule(late, 0, [1]).visits[0]
    assert (b.window, b.start) == (1, 14 * H)


def test_a_good_plan_passes() -> None:
    problem = line_problem()
    assert kinds(problem, {0: [0, 1, 2]}) == []
    assert kinds(problem, {0: [0], 1: [1, 2]}) == []


def test_capacity_on_leaving_the_depot() -> None:
    assert "capacity" in kinds(line_problem(capacity=4), {0: [0, 1]})  # 5 crates out


def test_capacity_after_a_pickup() -> None:
    # 2 + 3 out (fits 5), then C's 4 pickups: 4 after A, 1 after B, 5 after C
    problem = line_problem(capacity=5)
    assert kinds(problem, {0: [0, 1, 2]}) == []
    heavy = line_problem(capacity=5, stops=(
        Stop("A", 2, 1, 600), Stop("B", 3, 0, 600), Stop("C", 0, 6, 600)))
    found = routing.check(heavy, Proposal({0: [0, 1, 2]}))
    assert [v.kind for v in found] == ["capacity"] and "after C" in found[0].message


def test_a_missed_window() -> None:
    problem = line_problem()
    late_start = Problem(depots=problem.depots, stops=problem.stops,
                         vehicles=(Vehicle("V1", 10, 0, 12 * H, 18 * H),),
                         distance=problem.distance, duration=problem.duration)
    found = routing.check(late_start, Proposal({0: [0, 1, 2]}))
    assert [v.kind for v in found] == ["window"]
    assert "A" in found[0].message and "08:00-12:00" in found[0].message


def test_back_after_the_shift() -> None:
    problem = line_problem(end=7 * H + 1000, stops=(Stop("A", 1, 0, 600),))
    found = routing.check(problem, Proposal({0: [0]}))  # 10 + 10 + 10 minutes > 16:40
    assert [v.kind for v in found] == ["shift"] and "07:30" in found[0].message


def test_every_required_stop_once() -> None:
    problem = line_problem()
    assert kinds(problem, {0: [0, 1]}) == ["unserved"]
    assert kinds(problem, {0: [0, 1, 2], 1: [2]}) == ["served_twice"]
    optional = line_problem(stops=(Stop("A", 1, 0, 0), Stop("B", 1, 0, 0, required=False)))
    assert kinds(optional, {0: [0]}) == []


def test_indices_that_do_not_exist() -> None:
    problem = line_problem()
    assert kinds(problem, {5: [0, 1, 2]})[0] == "unknown_vehicle"
    assert kinds(problem, {0: [0, 1, 2, 7]})[0] == "unknown_stop"


def test_trim_takes_out_what_breaks_a_route() -> None:
    problem = line_problem(capacity=4)
    trimmed = routing.trim(problem, Proposal({0: [0, 1, 2]}))
    relaxed = Problem(depots=problem.depots,
                      stops=tuple(Stop(s.key, s.delivery, s.pickup, s.service, s.windows,
                                       required=False) for s in problem.stops),
                      vehicles=problem.vehicles, distance=problem.distance,
                      duration=problem.duration)
    assert routing.check(relaxed, trimmed) == []
    assert 1 <= len(trimmed.sequences[0]) < 3


def test_windows_from_opening_hours_leave_time_for_the_service() -> None:
    hours = {"mon": [["08:30", "11:30"], ["13:30", "17:00"]], "tue": [],
             "wed": [["09:00", "09:05"]]}
    assert routing.windows_for(hours, "mon", 600) == (
        Window(8 * H + 1800, 11 * H + 1200), Window(13 * H + 1800, 16 * H + 3000))
    assert routing.windows_for(hours, "tue", 600) == ()  # closed
    assert routing.windows_for(hours, "wed", 600) == ()  # shorter than the service
    assert routing.windows_for(hours, "sun", 0) == ()  # not listed: closed


def test_travel_matrices_from_coordinates() -> None:
    jiaxing, haining = (30.7712, 120.7093), (30.5105, 120.6869)
    metres, seconds = routing.travel_matrices([jiaxing, haining], 1.3, 40)
    assert metres[0][0] == metres[1][1] == 0 and metres[0][1] == metres[1][0]
    straight_km = metres[0][1] / 1.3 / 1000
    assert 28 < straight_km < 30  # ~29 km as the crow flies
    assert abs(seconds[0][1] - metres[0][1] / 1000 / 40 * 3600) <= 1
