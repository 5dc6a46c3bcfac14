"""The reference network of Jiaxing's size, generated so it can be regenerated exactly.

`python -m devtools.make_network > services/logistics/data/jiaxing_network.json`

Jiaxing's "general library + branches" system (../shared/notes/workload.md): 1 central
library, 5 county libraries, 66 town branches, 88 village branches, 105 smart study
rooms — 265 library sites — served from one logistics hub by 12 delivery vans, plus 2
book vans with monthly stops. Coordinates are plausible, not surveyed: towns within
5-18 km of their county seat (or the city), villages within 2-6 km of their town,
smart study rooms mostly in the urban areas. Town names are real where known.
"""

from __future__ import annotations

import json
import math
import random
import sys
from typing import Any

SEED = 20261123
WEEK = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
HUB = {"code": "JX-HUB", "lat": 30.7712, "lon": 120.7093}
CENTRAL = {"code": "JX-CENTRAL", "lat": 30.7489, "lon": 120.7588}

#: (district code, seat name, Chinese, lat, lon, towns, villages, smart rooms, town names)
AREAS: list[tuple[str, str, str, float, float, int, int, int, list[str]]] = [
    ("NH", "Nanhu", "南湖", 30.7489, 120.7588, 9, 10, 25,
     ["Xinfeng", "Fengqiao", "Daqiao", "Yuxin", "Qixing", "Dongzha", "Jianshe", "Xinjia",
      "Chengnan"]),
    ("XZ", "Xiuzhou", "秀洲", 30.7735, 120.7092, 9, 10, 20,
     ["Wangdian", "Xincheng", "Wangjiangjing", "Hongxing", "Youchegang", "Gaozhao",
      "Jiaxing Port", "Xintang", "Tangxi"]),
    ("HN", "Haining", "海宁", 30.5100, 120.6800, 11, 16, 15,
     ["Xiashi", "Changan", "Xucun", "Zhouwangmiao", "Dingqiao", "Yuanhua", "Huangwan",
      "Maqiao", "Haichang", "Yanguan", "Chenqiao"]),
    ("PH", "Pinghu", "平湖", 30.7000, 121.0100, 9, 13, 12,
     ["Danghu", "Caoqiao", "Guangchen", "Xindai", "Zhapu", "Xincang", "Linhu", "Dushan",
      "Zhongdai"]),
    ("TX", "Tongxiang", "桐乡", 30.6300, 120.5600, 11, 15, 12,
     ["Wuzhen", "Puyuan", "Chongfu", "Zhouquan", "Heshan", "Shimen", "Tudian", "Dama",
      "Gaoqiao", "Fengming", "Wutong"]),
    ("JS", "Jiashan", "嘉善", 30.8400, 120.9200, 9, 12, 11,
     ["Xitang", "Yaozhuang", "Ganyao", "Dayun", "Tianning", "Taozhuang", "Huimin",
      "Luoxing", "Weitang"]),
    ("HY", "Haiyan", "海盐", 30.5300, 120.9500, 8, 12, 10,
     ["Wuyuan", "Qinshan", "Tongyuan", "Baibu", "Yuantong", "Shendang", "Xitangqiao",
      "Ganpu"]),
]
COUNTY_SEATS = {"HN", "PH", "TX", "JS", "HY"}


def offset(rng: random.Random, lat: float, lon: float, km_min: float,
           km_max: float) -> tuple[float, float]:
    """A point `km_min`..`km_max` km away in a random direction, kept on land."""
    for _ in range(100):
        angle = rng.uniform(0, 2 * math.pi)
        km = rng.uniform(km_min, km_max)
        new_lat = lat + km * math.cos(angle) / 111.0
        new_lon = lon + km * math.sin(angle) / (111.0 * math.cos(math.radians(lat)))
        in_box = 30.42 <= new_lat <= 30.95 and 120.45 <= new_lon <= 121.10
        in_bay = new_lat < 30.47 and new_lon > 120.80  # Hangzhou Bay
        if in_box and not in_bay:
            return round(new_lat, 4), round(new_lon, 4)
    return round(lat, 4), round(lon, 4)


def hours(kind: str, closed: str | None = None) -> dict[str, list[list[str]]]:
    if kind in ("central", "county"):
        return {d: ([["13:30", "20:30"]] if d == closed else [["09:00", "20:30"]])
                for d in WEEK}
    if kind == "town":
        return {d: ([] if d == "mon" else [["08:30", "11:30"], ["13:30", "17:00"]])
                for d in WEEK}
    if kind == "village":
        return {d: ([] if d in ("mon", "sun") else [["08:30", "11:30"], ["14:00", "17:00"]])
                for d in WEEK}
    return {d: [["08:00", "21:00"]] for d in WEEK}  # smart study room, hub-like hours


TOWN_DAYS = [["tue", "thu", "sat"], ["wed", "fri", "sat"], ["tue", "wed", "fri"]]
SMALL_DAYS = [["tue", "fri"], ["wed", "sat"], ["thu", "sat"], ["tue", "thu"], ["wed", "fri"]]


def site(code: str, name: str, kind: str, lat: float, lon: float, address: str,
         opening: dict[str, list[list[str]]], courier: list[str]) -> dict[str, Any]:
    return {"code": code, "name": name, "kind": kind, "lat": lat, "lon": lon,
            "hub": "JX-HUB", "address": address, "opening_hours": opening,
            "courier_days": courier}


def build() -> dict[str, Any]:
    rng = random.Random(SEED)
    sites: list[dict[str, Any]] = [
        site("JX-HUB", "Jiaxing Library Logistics Hub (嘉兴市图书馆物流中心)", "hub",
             HUB["lat"], HUB["lon"], "Xiuzhou District, Jiaxing, Zhejiang",
             {d: ([] if d == "sun" else [["06:30", "19:00"]]) for d in WEEK}, WEEK[:6]),
        site("JX-CENTRAL", "Jiaxing Library (嘉兴市图书馆)", "central", CENTRAL["lat"],
             CENTRAL["lon"], "Nanhu District, Jiaxing, Zhejiang", hours("central", "mon"),
             WEEK[:6]),
    ]
    counters = {"town": 0, "village": 0, "smart": 0}
    for area, seat, chinese, lat, lon, towns, villages, rooms, names in AREAS:
        where = f"{seat}, Jiaxing, Zhejiang"
        if area in COUNTY_SEATS:
            sites.append(site(f"JX-{area}-01", f"{seat} Library ({chinese}图书馆)", "county",
                              lat, lon, where, hours("county", "mon"), WEEK[:6]))
        town_points = []
        for n in range(towns):
            name = names[n % len(names)]
            t_lat, t_lon = offset(rng, lat, lon, 5, 18)
            town_points.append((name, t_lat, t_lon))
            sites.append(site(f"JX-{area}-T{n + 1:02d}", f"{name} Branch", "town", t_lat,
                              t_lon, f"{name}, {where}", hours("town"),
                              TOWN_DAYS[counters["town"] % len(TOWN_DAYS)]))
            counters["town"] += 1
        for n in range(villages):
            town, t_lat, t_lon = town_points[n % len(town_points)]
            v_lat, v_lon = offset(rng, t_lat, t_lon, 2, 6)
            sites.append(site(f"JX-{area}-V{n + 1:02d}", f"{town} Village Branch {n + 1}",
                              "village", v_lat, v_lon, f"near {town}, {where}",
                              hours("village"),
                              SMALL_DAYS[counters["village"] % len(SMALL_DAYS)]))
            counters["village"] += 1
        for n in range(rooms):
            r_lat, r_lon = offset(rng, lat, lon, 0.5, 6)
            sites.append(site(f"JX-{area}-S{n + 1:02d}", f"{seat} Smart Study Room {n + 1}",
                              "smart_room", r_lat, r_lon, where, hours("smart_room"),
                              SMALL_DAYS[counters["smart"] % len(SMALL_DAYS)]))
            counters["smart"] += 1
    stops = []
    for van in (1, 2):
        sites.append(site(f"JX-BV-{van:02d}", f"Book van {van} (流动图书车)", "book_van",
                          HUB["lat"], HUB["lon"], "Parked at the logistics hub",
                          {d: ([] if d == "sun" else [["07:00", "19:00"]]) for d in WEEK},
                          ["mon", "thu"]))
        for n in range(10):
            area = AREAS[2 + (van - 1) * 2 + n % 2]
            s_lat, s_lon = offset(rng, area[3], area[4], 8, 20)
            code = f"JX-BM-{van}{n + 1:02d}"
            stops.append(code)
            sites.append(site(code, f"{area[1]} book van stop {van}-{n + 1}", "bookmobile_stop",
                              s_lat, s_lon, f"{area[1]}, Jiaxing, Zhejiang",
                              {d: [["09:00", "17:00"]] for d in WEEK}, []))
    vehicles: list[dict[str, Any]] = [
        {"id": f"VAN-{n:02d}", "name": f"Delivery van {n} (浙F·D{n:04d})", "kind": "van",
         "depot": "JX-HUB", "capacity_crates": 60, "shift": ["07:00", "18:00"],
         "days": WEEK[:6]}
        for n in range(1, 13)
    ]
    for van in (1, 2):
        mine = [c for c in stops if c.startswith(f"JX-BM-{van}")]
        timetable = []
        rounds = [(week, day) for week in range(1, 5) for day in ("tue", "thu")]
        for n, (week, day) in enumerate(rounds):  # every stop once a month
            calls = mine[n::len(rounds)]
            times = [("09:00", "11:30"), ("13:30", "16:00")]
            timetable.append({"day": day, "week": week, "stops": [
                {"site": code, "arrive": arrive, "depart": depart}
                for code, (arrive, depart) in zip(calls, times, strict=False)]})
        vehicles.append({"id": f"BV-{van:02d}", "name": f"Book van {van} (流动图书车)",
                         "kind": "book_van", "depot": "JX-HUB", "capacity_crates": 25,
                         "shift": ["08:00", "17:30"], "days": ["tue", "thu"],
                         "site": f"JX-BV-{van:02d}", "timetable": timetable})
    surnames = ["Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu",
                "Xu", "Sun", "Zhu", "Ma"]
    given = ["Wei", "Fang", "Min", "Jing", "Lei", "Qiang", "Yan", "Jun", "Hua", "Ping", "Gang",
             "Ling", "Tao", "Hui"]
    drivers = [{"id": f"D-{n + 1:02d}", "name": f"{surnames[n]} {given[n]}",
                "vehicle": v["id"], "phone": f"+86 573 {8200 + n:04d} {1000 + 37 * n:04d}"}
               for n, v in enumerate(vehicles)]
    return {"network": "Jiaxing reference network",
            "description": "A network of Jiaxing's size for planning and load tests: 265 "
                           "library sites (1 central, 5 county, 66 town, 88 village, 105 "
                           "smart study rooms), one hub, 12 vans, 2 book vans with 20 stops. "
                           "Generated by devtools/make_network.py; coordinates plausible, "
                           "not surveyed.",
            "sites": sites, "vehicles": vehicles, "drivers": drivers}


def render(document: dict[str, Any]) -> str:
    """One site (vehicle, driver) per line: small, and a diff shows what changed."""
    def rows(items: list[Any]) -> str:
        return ",\n".join("  " + json.dumps(item, ensure_ascii=False) for item in items)

    head = {k: v for k, v in document.items() if k not in ("sites", "vehicles", "drivers")}
    parts = [json.dumps(head, ensure_ascii=False, indent=1)[:-2] + ","]
    for key in ("sites", "vehicles", "drivers"):
        closing = "]," if key != "drivers" else "]"
        parts.append(f' "{key}": [\n{rows(document[key])}\n {closing}')
    return "\n".join(parts) + "\n}\n"


def main() -> None:
    document = build()
    kinds: dict[str, int] = {}
    for s in document["sites"]:
        kinds[s["kind"]] = kinds.get(s["kind"], 0) + 1
    sys.stdout.write(render(document))
    print(f"{len(document['sites'])} sites {kinds}, {len(document['vehicles'])} vehicles, "
          f"{len(document['drivers'])} drivers", file=sys.stderr)


if __name__ == "__main__":
    main()
