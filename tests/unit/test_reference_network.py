"""The shipped networks: the reference one has Jiaxing's size and never drifts from its
generator; both parse under the network rules."""

from __future__ import annotations

import json
from collections import Counter

from devtools import make_network
from services.logistics import domain
from services.logistics.network import DEMO_NETWORK, REFERENCE_NETWORK

HUB = (30.7712, 120.7093)


def test_the_reference_network_has_jiaxings_size() -> None:
    network = domain.parse_network(json.loads(REFERENCE_NETWORK.read_text()))
    kinds = Counter(s.kind for s in network.sites)
    assert (kinds["central"], kinds["county"], kinds["town"], kinds["village"],
            kinds["smart_room"]) == (1, 5, 66, 88, 105)
    assert sum(kinds[k] for k in ("central", "county", "town", "village", "smart_room")) == 265
    assert kinds["hub"] == 1
    assert Counter(v.kind for v in network.vehicles) == {"van": 12, "book_van": 2}
    assert {d.vehicle for d in network.drivers} == {v.id for v in network.vehicles}
    for site in network.sites:
        assert 30.40 <= site.lat <= 30.95 and 120.45 <= site.lon <= 121.10, site.code
        assert domain.haversine_km(*HUB, site.lat, site.lon) <= 70, site.code
    # each book van stop is visited once a month
    for van in (v for v in network.vehicles if v.kind == "book_van"):
        calls = Counter(stop.site for day in van.timetable for stop in day.stops)
        assert len(calls) == 10 and set(calls.values()) == {1}


def test_the_reference_file_is_what_its_generator_writes() -> None:
    assert REFERENCE_NETWORK.read_text() == make_network.render(make_network.build())


def test_the_demo_network_parses_with_its_vans_drivers_and_book_van() -> None:
    network = domain.parse_network(json.loads(DEMO_NETWORK.read_text()))
    assert {v.id for v in network.vehicles} == {"VAN-01", "VAN-02", "BV-01"}
    assert {d.id for d in network.drivers} == {"D-01", "D-02", "D-03"}
    [van] = [v for v in network.vehicles if v.kind == "book_van"]
    assert van.site == "JX-BV-01" and van.timetable[0].stops[0].site == "JX-BM-01"
