"""Logistics' pure rules for legs, crates and what a day's plan contains."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from services.logistics import domain, handlers
from services.logistics.models import Site, Vehicle
from shared.service.settings import Settings

HUBS = {"HUB": "HUB", "A": "HUB", "B": "HUB", "HUB2": "HUB2", "X": "HUB2"}
MONDAY = date(2026, 11, 30)
NOW = datetime(2026, 11, 30, 5, 0, tzinfo=UTC)


def test_legs_go_through_the_hub_unless_a_route_goes_direct() -> None:
    assert domain.next_leg("A", "B", HUBS) == "HUB"
    assert domain.next_leg("A", "B", HUBS, direct=True) == "B"
    assert domain.next_leg("HUB", "B", HUBS) == "B"
    assert domain.next_leg("HUB", "X", HUBS) == "HUB2"  # another hub's branch
    assert domain.next_leg("HUB2", "X", HUBS) == "X"
    assert domain.next_leg("A", "HUB", HUBS) == "HUB"
    assert domain.next_leg("B", "B", HUBS) is None


def test_crate_barcodes_carry_a_luhn_check_digit() -> None:
    assert domain.crate_barcode(1) == "CR00000018"
    codes = [domain.crate_barcode(n) for n in range(1, 500)]
    assert len(set(codes)) == len(codes)
    for code in codes:  # a Luhn check over all the digits (check digit included) is 0
        digits = [int(c) for c in code[2:]]
        total = sum(d if i % 2 == 0 else (2 * d - 9 if 2 * d > 9 else 2 * d)
                    for i, d in enumerate(reversed(digits)))
        assert total % 10 == 0
    # one digit mistyped changes the check digit
    assert domain.crate_barcode(1234567)[-1] != domain.crate_barcode(1234568)[-1]


def test_packing_tops_up_open_crates_then_opens_new_ones_per_next_site() -> None:
    serial = itertools.count(1)
    waiting = [(f"S{n}", "HUB") for n in range(5)] + [("S9", "B")]
    packing = domain.pack(waiting, [domain.OpenCrate("OLD", "HUB", 2)], 3,
                          lambda: f"NEW{next(serial)}")
    assert packing.into == {"S0": "OLD", "S1": "NEW1", "S2": "NEW1", "S3": "NEW1",
                            "S4": "NEW2", "S9": "NEW3"}
    assert packing.new == [("NEW1", "HUB"), ("NEW2", "HUB"), ("NEW3", "B")]
    assert packing.filled == {"OLD": 3, "NEW1": 3, "NEW2": 1, "NEW3": 1}
    assert domain.crates_for(0, 40) == 0 and domain.crates_for(41, 40) == 2


def test_crate_scans_follow_the_crate_life() -> None:
    assert domain.apply_crate_scan("open", "seal") == "sealed"
    assert domain.apply_crate_scan("sealed", "load") == "loaded"
    assert domain.apply_crate_scan("loaded", "unload") == "unloaded"
    assert domain.apply_crate_scan("loaded", "load") is None
    assert domain.apply_crate_scan("sealed", "pack") is None
    assert domain.apply_crate_scan("unloaded", "unload") is None


def plan_site(code: str, *, courier: tuple[str, ...] = ("mon", "thu"),
              hub: str = "HUB", active: bool = True) -> domain.PlanSite:
    return domain.PlanSite(code=code, hub=hub, opening_hours={}, courier_days=courier,
                           service_minutes=10, active=active)


VAN = domain.PlanVehicle("V1", "HUB", 10, "07:00", "17:00", ("mon", "tue", "wed"))


def windows(site: domain.PlanSite, day: str) -> tuple[tuple[int, int], ...]:
    return () if site.code == "CLOSED" else ((9 * 3600, 17 * 3600),)


def test_stops_are_courier_day_sites_with_crates_and_overdue_sites_any_day() -> None:
    sites = {c: plan_site(c) for c in ("A", "B", "C", "CLOSED", "OFF")}
    sites["C"] = plan_site("C", courier=("fri",))
    sites["OFF"] = plan_site("OFF", active=False)
    sites["FAR"] = plan_site("FAR", hub="HUB2")
    fresh = NOW - timedelta(hours=1)
    demand = {
        "A": domain.Demand(drop=2, collect=1, oldest=fresh),
        "B": domain.Demand(drop=0, collect=0, oldest=None),  # nothing to do
        "C": domain.Demand(drop=1, collect=0, oldest=NOW - timedelta(hours=50)),  # overdue
        "CLOSED": domain.Demand(drop=1, collect=0, oldest=fresh),
        "OFF": domain.Demand(drop=1, collect=0, oldest=fresh),
        "FAR": domain.Demand(drop=1, collect=0, oldest=fresh),  # another hub's
    }
    needs, unplanned = domain.stops_to_plan(MONDAY, "HUB", sites, demand, [VAN], now=NOW,
                                            target=timedelta(hours=48), windows=windows)
    assert [(n.site, n.delivery, n.pickup, n.overdue) for n in needs] == [
        ("A", 2, 1, False), ("C", 1, 0, True)]
    assert needs[0].service_s == 600 and needs[0].windows == ((9 * 3600, 17 * 3600),)
    assert {(u.site, u.reason) for u in unplanned} == {
        ("CLOSED", "closed all day on mon (courier day)"), ("OFF", "the site is inactive")}
    # on Thursday no van runs: every stop is unplanned, with that reason
    thursday = MONDAY + timedelta(days=3)
    needs, unplanned = domain.stops_to_plan(thursday, "HUB", sites, demand, [VAN], now=NOW,
                                            target=timedelta(hours=48), windows=windows)
    assert needs == [] and {u.site for u in unplanned} >= {"A", "C"}
    assert all("no van" in u.reason for u in unplanned if u.site in ("A", "C"))


def test_a_site_needing_more_than_a_van_load_becomes_several_stops() -> None:
    sites = {"A": plan_site("A")}
    demand = {"A": domain.Demand(drop=23, collect=4, oldest=NOW)}
    needs, _ = domain.stops_to_plan(MONDAY, "HUB", sites, demand, [VAN], now=NOW,
                                    target=timedelta(hours=48), windows=windows)
    assert [(n.part, n.delivery, n.pickup) for n in needs] == [(1, 10, 4), (2, 10, 0),
                                                               (3, 3, 0)]


def test_stability_counts_stops_that_kept_their_vehicle() -> None:
    assert domain.stability({"A#1": "V1", "B#1": "V1", "C#1": "V2"},
                            {"A#1": "V1", "B#1": "V2", "D#1": "V2"}) == {
        "compared": 2, "kept": 1, "moved": 1, "kept_share": 0.5}
    assert domain.stability({}, {"A#1": "V1"})["kept_share"] is None


def test_route_progress_and_book_van_timetables() -> None:
    assert domain.stop_after_scan("pending", "arrive") == "arrived"
    assert domain.stop_after_scan("arrived", "depart") == "served"
    assert domain.stop_after_scan("served", "arrive") == "served"
    assert domain.route_finished(["served", "unserved"])
    assert not domain.route_finished(["served", "arrived"])
    assert domain.route_id_for(MONDAY, "VAN-01") == "R-20261130-VAN-01"
    second_tuesday = date(2026, 12, 8)
    assert domain.timetable_applies({"day": "tue", "week": 2}, second_tuesday)
    assert not domain.timetable_applies({"day": "tue", "week": 1}, second_tuesday)
    assert domain.timetable_applies({"day": "tue", "week": None}, second_tuesday)
    assert not domain.timetable_applies({"day": "wed", "week": None}, second_tuesday)


def test_a_supplied_travel_matrix_replaces_the_estimate(tmp_path: Path) -> None:
    now = datetime(2026, 11, 30, 5, 0, tzinfo=UTC)
    hours = {day: [["08:00", "18:00"]] for day in domain.WEEKDAYS}
    sites = {code: Site(code=code, name=code, kind="hub" if code == "HUB" else "town",
                        lat=30.7 + n / 10, lon=120.7, hub="HUB", opening_hours=hours,
                        courier_days=list(domain.WEEKDAYS), updated_at=now)
             for n, code in enumerate(["HUB", "A", "B"])}
    van = Vehicle(vehicle_id="V1", name="V1", kind="van", depot="HUB", capacity_crates=10,
                  shift_start="07:00", shift_end="18:00", days=list(domain.WEEKDAYS),
                  timetable=[], updated_at=now)
    demand = {c: domain.Demand(drop=1, collect=0, oldest=now) for c in ("A", "B")}
    data = handlers.PlanningInput(MONDAY, "HUB", sites, [van], {}, demand, {})
    estimated = handlers.build_problem(data, Settings(), now).problem
    assert 1000 < estimated.duration[0][1] < 2000  # ~11 km x 1.3 at 40 km/h
    matrix = tmp_path / "roads.json"
    matrix.write_text(json.dumps({"sites": ["HUB", "A"], "minutes": [[0, 42], [40, 0]],
                                  "km": [[0, 31.5], [30, 0]]}))
    supplied = handlers.build_problem(
        data, Settings(travel_matrix_file=matrix), now)
    assert supplied.problem.duration[0][1] == 42 * 60 and supplied.problem.duration[1][0] == 40 * 60
    assert supplied.metres[0][1] == 31500
    assert supplied.problem.duration[0][2] == estimated.duration[0][2]  # B not in the file
