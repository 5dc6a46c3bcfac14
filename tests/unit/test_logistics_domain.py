"""Logistics' pure rules: network files, the shipment state machine, distances."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from services.logistics import domain
from services.logistics.domain import InvalidNetwork, ShipmentState, apply_scan, validate_network

DEMO = Path(__file__).resolve().parents[2] / "services/logistics/data/demo_network.json"


def site(code: str, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "code": code, "name": f"Site {code}", "kind": "town", "lat": 30.75, "lon": 120.75,
        "hub": "JX-HUB", "opening_hours": {"mon": [["09:00", "17:00"]], "tue": []},
        "courier_days": ["mon"],
    }
    base.update(overrides)
    return base


def network(*sites: dict[str, Any]) -> dict[str, Any]:
    return {"sites": [site("JX-HUB", kind="hub"), *sites]}


def problems(document: Any) -> list[tuple[str | None, str]]:
    with pytest.raises(InvalidNetwork) as caught:
        validate_network(document)
    return [(p.site, p.field) for p in caught.value.problems]


# --- the demo network ------------------------------------------------------------------------


def test_demo_network_is_valid_and_shaped_like_jiaxing() -> None:
    sites = validate_network(json.loads(DEMO.read_text()))
    by_code = {s.code: s for s in sites}
    assert by_code["JX-HUB"].kind == "hub"
    assert by_code["JX-CENTRAL"].kind == "central"
    assert {"JX-HN-01", "JX-HY-01", "JX-PH-01", "JX-TX-01", "JX-JS-01"} <= by_code.keys()
    branches = [s for s in sites if s.kind not in ("hub", "central")]
    assert len(branches) >= 12
    assert {"county", "town", "village", "smart_room", "bookmobile_stop"} <= {
        s.kind for s in branches}
    assert all(s.hub == "JX-HUB" for s in sites)
    assert all(30.4 <= s.lat <= 31.0 and 120.4 <= s.lon <= 121.2 for s in sites)
    groups: dict[str, list[str]] = {}
    for s in sites:
        if s.floating_group:
            groups.setdefault(s.floating_group, []).append(s.code)
    assert any(len(codes) == 2 for codes in groups.values())
    assert any(hours == [] for s in sites for hours in s.opening_hours.values())


def test_missing_weekdays_are_closed_days() -> None:
    [_, branch] = validate_network(network(site("JX-A")))
    assert branch.opening_hours["mon"] == [["09:00", "17:00"]]
    assert branch.opening_hours["sun"] == []
    assert list(branch.opening_hours) == list(domain.WEEKDAYS)


# --- validation names the site and the field ---------------------------------------------


def test_duplicate_codes_are_named() -> None:
    assert problems(network(site("JX-A"), site("JX-A"))) == [("JX-A", "code")]


def test_hub_must_exist_and_be_a_hub() -> None:
    found = problems(network(site("JX-A", hub="JX-NOWHERE"), site("JX-B", hub="JX-A")))
    assert found == [("JX-A", "hub"), ("JX-B", "hub")]


def test_coordinates_must_be_degrees_in_range() -> None:
    found = problems(network(site("JX-A", lat=120.7, lon=30.7), site("JX-B", lon="east")))
    assert found == [("JX-A", "lat"), ("JX-B", "lon")]


@pytest.mark.parametrize(
    ("hours", "field"),
    [
        ({"mon": [["9:00", "17:00"]]}, "opening_hours.mon[0]"),
        ({"tue": [["09:00", "24:30"]]}, "opening_hours.tue[0]"),
        ({"wed": [["17:00", "09:00"]]}, "opening_hours.wed[0]"),
        ({"thu": [["09:00", "09:00"]]}, "opening_hours.thu[0]"),
        ({"fri": [["09:00"]]}, "opening_hours.fri[0]"),
        ({"sat": [["09:00", "12:00"], ["11:00", "15:00"]]}, "opening_hours.sat"),
        ({"funday": []}, "opening_hours.funday"),
        ({"sun": "09:00-17:00"}, "opening_hours.sun"),
        (None, "opening_hours"),
    ],
)
def test_bad_opening_hours_name_the_day(hours: Any, field: str) -> None:
    assert problems(network(site("JX-A", opening_hours=hours))) == [("JX-A", field)]


def test_every_problem_is_reported_at_once_with_a_readable_message() -> None:
    bad = site("JX-A", kind="castle", courier_days=["mon", "someday"])
    del bad["name"]
    with pytest.raises(InvalidNetwork) as caught:
        validate_network(network(bad, {"name": "no code"}))
    fields = [(p.site, p.field) for p in caught.value.problems]
    assert ("JX-A", "name") in fields
    assert ("JX-A", "kind") in fields
    assert ("JX-A", "courier_days[1]") in fields
    assert (None, "code") in fields
    assert "JX-A: kind: unknown kind 'castle'" in str(caught.value)
    assert "sites[2]: code: is required" in str(caught.value)


def test_an_empty_network_is_refused() -> None:
    assert problems({"sites": []}) == [(None, "sites")]
    assert problems({"stops": [site("JX-A")]}) == [(None, "sites")]


def test_a_bare_list_of_sites_is_a_network_too() -> None:
    assert len(validate_network([site("JX-HUB", kind="hub"), site("JX-A")])) == 2


# --- the shipment state machine ----------------------------------------------------------

ORIGIN, HUB, DEST, ELSEWHERE = "JX-HN-01", "JX-HUB", "JX-PH-01", "JX-TX-01"


def state(status: str, last_site: str = ORIGIN) -> ShipmentState:
    return ShipmentState(status=status, from_site=ORIGIN, to_site=DEST, last_site=last_site)


def test_load_at_origin_picks_up() -> None:
    assert apply_scan(state("created"), "load", ORIGIN).outcome == "picked_up"


def test_unload_at_destination_delivers() -> None:
    assert apply_scan(state("picked_up"), "unload", DEST).outcome == "delivered"


def test_unload_at_an_intermediate_stop_arrives_and_the_next_leg_loads_there() -> None:
    assert apply_scan(state("picked_up"), "unload", HUB).outcome == "arrived"
    at_hub = state("arrived", last_site=HUB)
    assert apply_scan(at_hub, "load", HUB).outcome == "picked_up"
    effect = apply_scan(at_hub, "load", ORIGIN)
    assert not effect.moved and "waits at JX-HUB" in effect.reason


def test_unload_at_destination_delivers_even_if_the_load_scan_was_missed() -> None:
    assert apply_scan(state("created"), "unload", DEST).outcome == "delivered"
    assert apply_scan(state("arrived", HUB), "unload", DEST).outcome == "delivered"


@pytest.mark.parametrize(
    ("status", "kind", "site", "why"),
    [
        ("created", "load", ELSEWHERE, "waits at JX-HN-01"),
        ("picked_up", "load", ORIGIN, "already loaded"),
        ("created", "unload", HUB, "never picked up"),
        ("arrived", "unload", ELSEWHERE, "not loaded since arriving"),
        ("created", "arrive", ORIGIN, "records the stop"),
        ("picked_up", "depart", ORIGIN, "records the stop"),
        ("delivered", "unload", DEST, "the shipment is delivered"),
        ("cancelled", "load", ORIGIN, "the shipment is cancelled"),
    ],
)
def test_scans_that_make_no_sense_are_reported_not_raised(status: str, kind: str, site: str,
                                                          why: str) -> None:
    effect = apply_scan(state(status, last_site=HUB if status == "arrived" else ORIGIN),
                        kind, site)
    assert effect.outcome == "ignored"
    assert why in effect.reason
    assert effect.describe() == f"ignored: {effect.reason}"


def test_open_statuses_and_cancellation() -> None:
    assert [s for s in ("created", "picked_up", "arrived", "delivered", "cancelled",
                        "exception") if domain.is_open(s)] == ["created", "picked_up", "arrived"]
    assert domain.can_cancel("created") and domain.can_cancel("picked_up")
    assert domain.can_cancel("exception")
    assert not domain.can_cancel("delivered") and not domain.can_cancel("cancelled")


# --- distances ----------------------------------------------------------------------------


def test_haversine_known_distances() -> None:
    assert domain.haversine_km(30.75, 120.75, 30.75, 120.75) == 0.0
    # one degree of latitude is about 111.2 km everywhere
    assert domain.haversine_km(30.0, 120.0, 31.0, 120.0) == pytest.approx(111.19, abs=0.05)
    # Jiaxing central library to Haining library: about 27 km as the crow flies
    assert domain.haversine_km(30.7489, 120.7588, 30.5105, 120.6869) == pytest.approx(27.4, abs=1)
    # symmetric, and the antipode is half the circumference
    a = domain.haversine_km(30.5, 120.5, 30.9, 121.1)
    assert a == pytest.approx(domain.haversine_km(30.9, 121.1, 30.5, 120.5))
    assert domain.haversine_km(0, 0, 0, 180) == pytest.approx(20015.1, abs=1)


def test_validation_does_not_touch_its_input() -> None:
    document = network(site("JX-A"))
    before = copy.deepcopy(document)
    validate_network(document)
    assert document == before


# --- vehicles, drivers, book vans -----------------------------------------------------------


def fleet_network(vehicles: list[dict[str, Any]], drivers: list[dict[str, Any]] | None = None,
                  *extra: dict[str, Any]) -> dict[str, Any]:
    doc = network(site("JX-A"), *extra)
    doc["vehicles"] = vehicles
    doc["drivers"] = drivers or []
    return doc


VAN = {"id": "VAN-1", "name": "Van 1", "kind": "van", "depot": "JX-HUB",
       "capacity_crates": 40, "shift": ["07:00", "17:00"]}


def fleet_problems(document: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidNetwork) as caught:
        domain.parse_network(document)
    return [(p.path, p.message) for p in caught.value.problems]


def test_a_fleet_parses_with_defaults() -> None:
    parsed = domain.parse_network(fleet_network(
        [VAN], [{"id": "D-1", "name": "Driver", "vehicle": "VAN-1"}]))
    [van] = parsed.vehicles
    assert (van.shift_start, van.shift_end, van.days, van.active) == (
        "07:00", "17:00", ["mon", "tue", "wed", "thu", "fri", "sat"], True)
    assert parsed.drivers[0].vehicle == "VAN-1"
    # service minutes default by kind; a site may say its own
    assert {s.code: s.service_minutes for s in parsed.sites} == {"JX-HUB": 20, "JX-A": 10}


@pytest.mark.parametrize(("change", "path"), [
    ({"depot": "JX-A"}, "vehicles.0.depot"),
    ({"capacity_crates": 0}, "vehicles.0.capacity_crates"),
    ({"capacity_crates": True}, "vehicles.0.capacity_crates"),
    ({"shift": ["17:00", "07:00"]}, "vehicles.0.shift"),
    ({"shift": ["7am", "17:00"]}, "vehicles.0.shift.0"),
    ({"days": ["mon", "someday"]}, "vehicles.0.days.1"),
    ({"kind": "truck"}, "vehicles.0.kind"),
    ({"site": "JX-A"}, "vehicles.0.site"),
])
def test_each_bad_vehicle_field_is_named(change: dict[str, Any], path: str) -> None:
    assert path in [p for p, _ in fleet_problems(fleet_network([{**VAN, **change}]))]


def test_drivers_name_existing_vehicles_and_ids_are_unique() -> None:
    found = fleet_problems(fleet_network(
        [VAN, VAN], [{"id": "D-1", "name": "A", "vehicle": "VAN-9"}]))
    paths = [p for p, _ in found]
    assert "vehicles.1.id" in paths and "drivers.0.vehicle" in paths


def test_a_book_van_needs_its_site_and_stops_of_the_network() -> None:
    van_site = site("JX-BV", kind="book_van")
    stop = site("JX-BM", kind="bookmobile_stop")
    book_van = {**VAN, "id": "BV-1", "kind": "book_van", "site": "JX-BV", "timetable": [
        {"day": "tue", "week": 2, "stops": [{"site": "JX-BM", "arrive": "09:00",
                                             "depart": "11:00"}]}]}
    parsed = domain.parse_network(fleet_network([book_van], None, van_site, stop))
    assert parsed.vehicles[0].timetable[0].week == 2
    bad = {**book_van, "timetable": [{"day": "tue", "week": 9, "stops": [
        {"site": "JX-A", "arrive": "11:00", "depart": "09:00"}]}]}
    paths = [p for p, _ in fleet_problems(fleet_network([bad], None, van_site, stop))]
    assert {"vehicles.0.timetable.0.week", "vehicles.0.timetable.0.stops.0.site",
            "vehicles.0.timetable.0.stops.0"} <= set(paths)
    # a book_van site no vehicle drives is named
    paths = [p for p, _ in fleet_problems(fleet_network([VAN], None, van_site))]
    assert "sites.2.kind" in paths


def test_single_edits_report_paths_inside_the_body() -> None:
    with pytest.raises(InvalidNetwork) as caught:
        domain.validate_vehicle({**VAN, "capacity_crates": -1},
                                sites={"JX-HUB": "hub"})
    assert [p.path for p in caught.value.problems] == ["capacity_crates"]
    with pytest.raises(InvalidNetwork) as caught:
        domain.validate_site(site("JX-B", hub="JX-A"), hubs={"JX-A": "town"})
    assert [p.path for p in caught.value.problems] == ["hub"]
    assert domain.validate_driver({"id": "D-2", "name": "B"}, vehicles=set()).vehicle is None


BOOK_VAN = {**VAN, "id": "BV-1", "kind": "book_van", "site": "JX-BV", "timetable": [
    {"day": "tue", "week": None, "stops": [
        {"site": "JX-BM", "arrive": "09:00", "depart": "11:00"},
        {"site": "JX-BM2", "arrive": "13:30", "depart": "15:00"}]}]}
BOOK_VAN_SITES = (site("JX-BV", kind="book_van"), site("JX-BM", kind="bookmobile_stop"),
                  site("JX-BM2", kind="bookmobile_stop"))


def test_service_minutes_and_address_default_by_kind() -> None:
    kinds = ["central", "county", "town", "village", "smart_room", "book_van",
             "bookmobile_stop"]
    doc = network(*(site(f"JX-{n}", kind=kind) for n, kind in enumerate(kinds)),
                  site("JX-OWN", service_minutes=0, address="  1 Main St  "))
    doc["vehicles"] = [{**BOOK_VAN, "site": "JX-5", "timetable": []}]
    parsed = {s.code: s for s in domain.parse_network(doc).sites}
    assert {parsed[f"JX-{n}"].kind: parsed[f"JX-{n}"].service_minutes
            for n in range(len(kinds))} == {
        k: v for k, v in domain.DEFAULT_SERVICE_MINUTES.items() if k != "hub"}
    assert parsed["JX-HUB"].service_minutes == 20
    assert (parsed["JX-OWN"].service_minutes, parsed["JX-OWN"].address) == (0, "1 Main St")
    assert parsed["JX-1"].address is None


@pytest.mark.parametrize(("change", "path"), [
    ({"service_minutes": 241}, "sites.1.service_minutes"),
    ({"service_minutes": -1}, "sites.1.service_minutes"),
    ({"service_minutes": 7.5}, "sites.1.service_minutes"),
    ({"service_minutes": True}, "sites.1.service_minutes"),
    ({"address": 12}, "sites.1.address"),
    ({"kind": "bus"}, "sites.1.kind"),
])
def test_each_bad_site_field_is_named_with_its_path(change: dict[str, Any], path: str) -> None:
    assert fleet_problems(network(site("JX-A", **change)))[0][0] == path


@pytest.mark.parametrize(("vehicle", "path"), [
    ({**VAN, "timetable": BOOK_VAN["timetable"]}, "vehicles.0.timetable"),
    ({**BOOK_VAN, "site": None}, "vehicles.0.site"),
    ({**BOOK_VAN, "site": "JX-BM"}, "vehicles.0.site"),
    ({**BOOK_VAN, "timetable": "monthly"}, "vehicles.0.timetable"),
    ({**BOOK_VAN, "timetable": [{"day": "tue", "stops": []}]}, "vehicles.0.timetable.0.stops"),
    ({**BOOK_VAN, "timetable": [{"day": "someday", "stops": [
        {"site": "JX-BM", "arrive": "09:00", "depart": "10:00"}]}]},
     "vehicles.0.timetable.0.day"),
    ({**BOOK_VAN, "timetable": [{"day": "tue", "stops": [
        {"site": "JX-BM", "arrive": "13:00", "depart": "14:00"},
        {"site": "JX-BM2", "arrive": "09:00", "depart": "10:00"}]}]},
     "vehicles.0.timetable.0.stops.1"),
    ({**BOOK_VAN, "timetable": [{"day": "tue", "stops": [
        {"site": "JX-BM", "arrive": "9:00", "depart": "10:00"}]}]},
     "vehicles.0.timetable.0.stops.0.arrive"),
    ({**VAN, "shift": "07:00-17:00"}, "vehicles.0.shift"),
    ({**VAN, "days": "mon"}, "vehicles.0.days"),
    ({**VAN, "active": "yes"}, "vehicles.0.active"),
    ({**VAN, "name": ""}, "vehicles.0.name"),
    ({k: v for k, v in VAN.items() if k != "depot"}, "vehicles.0.depot"),
    ("VAN-1", "vehicles.0"),
])
def test_each_bad_book_van_field_is_named(vehicle: Any, path: str) -> None:
    found = fleet_problems(fleet_network([vehicle], None, *BOOK_VAN_SITES))
    assert path in [p for p, _ in found], found


@pytest.mark.parametrize(("driver", "path"), [
    ({"id": "D-1", "name": "A", "vehicle": "VAN-1", "phone": 573}, "drivers.0.phone"),
    ({"id": "D-1", "name": "A", "vehicle": "VAN-1", "active": 1}, "drivers.0.active"),
    ({"id": "D-1", "vehicle": "VAN-1"}, "drivers.0.name"),
    ({"name": "A"}, "drivers.0.id"),
    (["D-1"], "drivers.0"),
])
def test_each_bad_driver_field_is_named(driver: Any, path: str) -> None:
    assert [p for p, _ in fleet_problems(fleet_network([VAN], [driver]))] == [path]


def test_a_book_van_site_is_driven_by_exactly_one_vehicle() -> None:
    doc = fleet_network([BOOK_VAN, {**BOOK_VAN, "id": "BV-2"}], None, *BOOK_VAN_SITES)
    assert fleet_problems(doc) == [("vehicles.1.site", "'JX-BV' is already the site of "
                                    "vehicle 'BV-1' (a book van site has exactly one vehicle)")]
    parsed = domain.parse_network(fleet_network([BOOK_VAN], None, *BOOK_VAN_SITES))
    [van] = parsed.vehicles
    assert (van.site, [s.site for s in van.timetable[0].stops]) == ("JX-BV", ["JX-BM", "JX-BM2"])
    assert van.timetable[0].week is None


def test_sections_that_are_not_lists_are_named() -> None:
    doc = network(site("JX-A"))
    doc["vehicles"], doc["drivers"] = {"VAN-1": VAN}, "none"
    assert [p for p, _ in fleet_problems(doc)] == ["vehicles", "drivers"]
    assert domain.parse_network({**network(site("JX-A")), "vehicles": None}).vehicles == []


def test_one_bad_site_is_not_reported_again_by_what_refers_to_it() -> None:
    hub = site("JX-HUB", kind="hub", lat=95)
    doc = {"sites": [hub, site("JX-A")], "vehicles": [VAN],
           "drivers": [{"id": "D-1", "name": "A", "vehicle": "VAN-1"}]}
    assert [p for p, _ in fleet_problems(doc)] == ["sites.0.lat"]
    doc = {"sites": [site("JX-HUB", kind="hub")], "vehicles": [{**VAN, "capacity_crates": 0}],
           "drivers": [{"id": "D-1", "name": "A", "vehicle": "VAN-1"}]}
    assert [p for p, _ in fleet_problems(doc)] == ["vehicles.0.capacity_crates"]


def test_messages_name_the_vehicle_or_driver() -> None:
    with pytest.raises(InvalidNetwork) as caught:
        domain.parse_network(fleet_network(
            [{**VAN, "shift": ["18:00", "07:00"]}],
            [{"id": "D-1", "name": "A", "vehicle": "VAN-9"}]))
    text = str(caught.value)
    assert "vehicle VAN-1: shift: starts at 18:00 but ends at 07:00" in text
    assert "driver D-1: vehicle: 'VAN-9' is not a vehicle of the network" in text


def test_single_vehicle_and_driver_edits_are_checked_against_the_network() -> None:
    kinds = {"JX-HUB": "hub", "JX-BV": "book_van", "JX-BM": "bookmobile_stop",
             "JX-BM2": "bookmobile_stop"}
    assert domain.validate_vehicle(BOOK_VAN, sites=kinds).kind == "book_van"
    with pytest.raises(InvalidNetwork) as caught:
        domain.validate_vehicle({**VAN, "depot": "JX-BV"}, sites=kinds)
    assert [p.path for p in caught.value.problems] == ["depot"]
    with pytest.raises(InvalidNetwork) as caught:
        domain.validate_driver({"id": "D-1", "name": "A", "vehicle": "VAN-1"},
                               vehicles={"BV-1"})
    assert [(p.path, str(p)) for p in caught.value.problems] == [
        ("vehicle", "driver D-1: vehicle: 'VAN-1' is not a vehicle of the network")]
    with pytest.raises(InvalidNetwork) as caught:
        domain.validate_site("JX-A", hubs=kinds)
    assert [p.path for p in caught.value.problems] == [""]
    # a new hub serves itself
    assert domain.validate_site(site("JX-H2", kind="hub", hub="JX-H2"), hubs={}).kind == "hub"
