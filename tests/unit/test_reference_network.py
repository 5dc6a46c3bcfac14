"""The shipped networks: the reference one has Jiaxing's size and never drifts from its
generator; both parse under the network rules."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from devtools import make_network
from services.logistics import domain
from services.logistics.network import DEMO_NETWORK, REFERENCE_NETWORK

HUB = (30.7712, 120.7093)
LIBRARY_KINDS = ("central", "county", "town", "village", "smart_room")


@pytest.fixture(scope="module")
def network() -> domain.Network:
    return domain.parse_network(json.loads(REFERENCE_NETWORK.read_text(encoding="utf-8")))


def test_the_reference_network_has_jiaxings_size(network: domain.Network) -> None:
    kinds = Counter(s.kind for s in network.sites)
    assert [kinds[k] for k in LIBRARY_KINDS] == [1, 5, 66, 88, 105]
    assert sum(kinds[k] for k in LIBRARY_KINDS) == 265
    assert (kinds["hub"], kinds["book_van"], kinds["bookmobile_stop"]) == (1, 2, 20)
    assert Counter(v.kind for v in network.vehicles) == {"van": 12, "book_van": 2}
    assert len(network.drivers) == 14
    # one driver per vehicle
    assert sorted(d.vehicle or "" for d in network.drivers) == sorted(
        v.id for v in network.vehicles)
    by_code = {s.code: s for s in network.sites}
    assert (by_code["JX-HUB"].lat, by_code["JX-HUB"].lon) == HUB
    assert (by_code["JX-CENTRAL"].lat, by_code["JX-CENTRAL"].lon) == (30.7489, 120.7588)


def test_every_site_is_on_land_near_the_hub(network: domain.Network) -> None:
    for site in network.sites:
        assert 30.40 <= site.lat <= 30.95 and 120.45 <= site.lon <= 121.10, site.code
        assert not (site.lat < 30.45 and site.lon > 120.8), f"{site.code} is in the bay"
        assert domain.haversine_km(*HUB, site.lat, site.lon) <= 70, site.code


def test_a_demanding_day_is_plannable(network: domain.Network) -> None:
    """Every library site with 2 crates to drop and 2 to collect fits the vans, and the
    sites sit around the hub, so ~22 stops a van fit a shift."""
    library = [s for s in network.sites if s.kind in LIBRARY_KINDS]
    vans = [v for v in network.vehicles if v.kind == "van"]
    assert sum(v.capacity_crates for v in vans) >= 2 * len(library)
    lat = sum(s.lat for s in library) / len(library)
    lon = sum(s.lon for s in library) / len(library)
    assert domain.haversine_km(*HUB, lat, lon) <= 30
    per_van = len(library) / len(vans)
    service_h = per_van * sum(s.service_minutes for s in library) / len(library) / 60
    shift_h = min(domain.seconds_of(v.shift_end) - domain.seconds_of(v.shift_start)
                  for v in vans) / 3600
    assert service_h <= shift_h / 2  # the rest of the shift is for driving


def test_couriers_call_on_open_days(network: domain.Network) -> None:
    for site in network.sites:
        if site.kind != "hub":
            closed = [d for d in site.courier_days if not site.opening_hours[d]]
            assert not closed, f"{site.code}: courier on closed {closed}"


def test_book_vans_visit_each_stop_once_a_month(network: domain.Network) -> None:
    kinds = {s.code: s.kind for s in network.sites}
    for van in (v for v in network.vehicles if v.kind == "book_van"):
        assert van.site and kinds[van.site] == "book_van"
        calls = Counter(stop.site for day in van.timetable for stop in day.stops)
        assert len(calls) == 10 and set(calls.values()) == {1}
        assert all(day.week is not None and day.day in van.days for day in van.timetable)


def test_the_reference_file_is_what_its_generator_writes() -> None:
    assert REFERENCE_NETWORK.read_text(encoding="utf-8") == make_network.render(
        make_network.build())


def test_the_demo_network_parses_with_its_vans_drivers_and_book_van() -> None:
    network = domain.parse_network(json.loads(DEMO_NETWORK.read_text(encoding="utf-8")))
    assert {v.id for v in network.vehicles} == {"VAN-01", "VAN-02", "BV-01"}
    assert {d.id for d in network.drivers} == {"D-01", "D-02", "D-03"}
    [van] = [v for v in network.vehicles if v.kind == "book_van"]
    assert van.site == "JX-BV-01" and van.timetable[0].stops[0].site == "JX-BM-01"
