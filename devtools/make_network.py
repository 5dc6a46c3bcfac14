"""The reference network of Jiaxing's size, generated so it can be regenerated exactly.

    python -m devtools.make_network > services/logistics/data/jiaxing_network.json

Jiaxing's "general library + branches" system (../shared/notes/workload.md, Dec 2021):
1 central library, 5 county libraries, 66 town/subdistrict branches, 88 village branches
and 105 smart study rooms, i.e. 265 library sites, served from one logistics hub by 12
delivery vans, plus 2 book vans with monthly stops. Planning and load tests need a network
of that size and shape, and a file nobody edits by hand: tests/unit/test_reference_network
checks the shipped file is exactly what this writes.

Town and subdistrict names are the real ones of each county; their positions are
plausible, not surveyed: a rough real bearing from the seat where known, subdistricts
2-6 km from the seat, towns 6-18 km, villages 1.5-5 km from a rural town, smart study
rooms mostly in the urban areas. Every point is inside lat 30.40-30.95, lon 120.45-121.10
and north of the Qiantang estuary and Hangzhou Bay shore.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

SEED = 20211231  # fixed: the file must not drift from this generator
WEEK = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
HUB = ("JX-HUB", 30.7712, 120.7093)  # as in demo_network.json
CENTRAL = ("JX-CENTRAL", 30.7489, 120.7588)  # as in demo_network.json
BOX = (30.40, 30.95, 120.45, 121.10)  # lat min, lat max, lon min, lon max
#: The north shore of the Qiantang estuary and Hangzhou Bay as (lon, lat), west to east:
#: a point is on land when it lies north of the line (with a small margin).
SHORE = [(120.45, 30.41), (120.80, 30.42), (120.81, 30.45), (120.93, 30.46),
         (120.97, 30.50), (121.00, 30.55), (121.05, 30.58), (121.10, 30.61)]
BEARINGS = {"N": 0, "NE": 45, "E": 90, "SE": 135, "S": 180, "SW": 225, "W": 270, "NW": 315}


@dataclass(frozen=True)
class Area:
    """A district or county: its seat, how many sites of each kind, its towns."""

    code: str
    name: str  # English, as in addresses
    chinese: str
    library: str | None  # the county library's name (None: the city's own districts)
    lat: float
    lon: float
    villages: int
    rooms: int
    #: (pinyin, Chinese, rough bearing from the seat or None) per town or subdistrict
    towns: tuple[tuple[str, str, str | None], ...]


AREAS = [
    Area("NH", "Nanhu District", "南湖", None, 30.7489, 120.7588, 10, 25, (
        ("Xinfeng", "新丰镇", "SE"), ("Fengqiao", "凤桥镇", "S"), ("Daqiao", "大桥镇", "E"),
        ("Yuxin", "余新镇", "NE"), ("Qixing", "七星街道", "E"), ("Dongzha", "东栅街道", "E"),
        ("Jianshe", "建设街道", None), ("Xinjia", "新嘉街道", "N"),
        ("Chengnan", "城南街道", "S"))),
    Area("XZ", "Xiuzhou District", "秀洲", None, 30.7735, 120.7092, 10, 20, (
        ("Wangjiangjing", "王江泾镇", "N"), ("Youchegang", "油车港镇", "NE"),
        ("Xincheng", "新塍镇", "NW"), ("Wangdian", "王店镇", "SW"), ("Honghe", "洪合镇", "W"),
        ("Xincheng", "新城街道", None), ("Jiabei", "嘉北街道", "N"),
        ("Tanghui", "塘汇街道", "W"), ("Gaozhao", "高照街道", "E"))),
    Area("HN", "Haining", "海宁", "Haining Library (海宁市图书馆)", 30.51, 120.68, 16, 15, (
        ("Xiashi", "硖石街道", None), ("Haizhou", "海洲街道", None),
        ("Haichang", "海昌街道", "N"), ("Maqiao", "马桥街道", "E"), ("Xucun", "许村镇", "W"),
        ("Changan", "长安镇", "W"), ("Zhouwangmiao", "周王庙镇", "W"),
        ("Dingqiao", "丁桥镇", "SE"), ("Yuanhua", "袁花镇", "E"), ("Huangwan", "黄湾镇", "SE"),
        ("Yanguan", "盐官镇", "SW"))),
    Area("PH", "Pinghu", "平湖", "Pinghu Library (平湖市图书馆)", 30.70, 121.01, 13, 12, (
        ("Danghu", "当湖街道", None), ("Zhongdai", "钟埭街道", "N"),
        ("Caoqiao", "曹桥街道", "W"), ("Guangchen", "广陈镇", "NE"),
        ("Xindai", "新埭镇", "N"), ("Lindai", "林埭镇", "S"), ("Xincang", "新仓镇", "SW"),
        ("Zhapu", "乍浦镇", "SE"), ("Dushangang", "独山港镇", "SE"))),
    Area("TX", "Tongxiang", "桐乡", "Tongxiang Library (桐乡市图书馆)", 30.63, 120.56, 15, 12, (
        ("Wutong", "梧桐街道", None), ("Fengming", "凤鸣街道", None),
        ("Longxiang", "龙翔街道", "N"), ("Wuzhen", "乌镇", "N"), ("Puyuan", "濮院镇", "NE"),
        ("Tudian", "屠甸镇", "E"), ("Chongfu", "崇福镇", "SW"), ("Zhouquan", "洲泉镇", "S"),
        ("Dama", "大麻镇", "S"), ("Heshan", "河山镇", "W"), ("Shimen", "石门镇", "W"))),
    Area("JS", "Jiashan", "嘉善", "Jiashan County Library (嘉善县图书馆)", 30.84, 120.92, 12,
         11, (
        ("Weitang", "魏塘街道", None), ("Luoxing", "罗星街道", "E"),
        ("Huimin", "惠民街道", "E"), ("Dayun", "大云镇", "SE"), ("Xitang", "西塘镇", "N"),
        ("Ganyao", "干窑镇", "W"), ("Taozhuang", "陶庄镇", "NW"), ("Yaozhuang", "姚庄镇", "NE"),
        ("Tianning", "天凝镇", "W"))),
    Area("HY", "Haiyan", "海盐", "Haiyan County Library (海盐县图书馆)", 30.53, 120.95, 12, 10, (
        ("Wuyuan", "武原街道", None), ("Xitangqiao", "西塘桥街道", "NE"),
        ("Qinshan", "秦山街道", "SW"), ("Baibu", "百步镇", "W"), ("Yucheng", "于城镇", "NW"),
        ("Shendang", "沈荡镇", "NW"), ("Tongyuan", "通元镇", "W"), ("Ganpu", "澉浦镇", "SW"))),
]
#: Common village names, pinyin and Chinese (real villages of these names abound).
VILLAGES = [("Xinxing", "新星"), ("Hongqi", "红旗"), ("Dongfang", "东方"), ("Lianhe", "联合"),
            ("Shengli", "胜利"), ("Yongfeng", "永丰"), ("Minzhu", "民主"), ("Heping", "和平"),
            ("Qianjin", "前进"), ("Xinhua", "新华"), ("Guangming", "光明"), ("Fuxing", "复兴"),
            ("Wuxing", "五星"), ("Hongxing", "红星"), ("Xinmin", "新民"), ("Shuangqiao", "双桥"),
            ("Sanxing", "三星"), ("Jinxing", "金星"), ("Dongfeng", "东风"), ("Taiping", "太平")]
ROADS = ["Zhongshan Road", "Renmin Road", "Wenhua Road", "Jiefang Road", "Xinhua Road",
         "Chaoyang Road", "Qingnian Road", "Heping Road", "Dongsheng Road", "Changsheng Road"]
DRIVERS = [("Wang Jianguo", "王建国"), ("Li Ming", "李明"), ("Zhang Lei", "张磊"),
           ("Liu Yang", "刘洋"), ("Chen Jie", "陈杰"), ("Yang Fan", "杨帆"),
           ("Zhao Gang", "赵刚"), ("Huang Wei", "黄伟"), ("Zhou Jun", "周军"),
           ("Wu Hao", "吴浩"), ("Xu Li", "徐丽"), ("Sun Tao", "孙涛"), ("Zhu Hong", "朱红"),
           ("Shen Ping", "沈平")]
#: Courier days. Towns alternate tue/thu/sat and wed/fri/sat: the workload note's
#: mon/wed/fri would call on a closed day (towns open Tue-Sun). Villages and smart rooms
#: take mon/thu, tue/fri or wed/sat in turn.
TOWN_DAYS = [["tue", "thu", "sat"], ["wed", "fri", "sat"]]
SMALL_DAYS = [["mon", "thu"], ["tue", "fri"], ["wed", "sat"]]
#: Book vans: id, the weekday it runs, the areas of its stops (5 each), courier days for
#: restocking while it is parked at the hub.
BOOK_VANS = [("01", "tue", ("HN", "HY"), ["mon", "fri"]),
             ("02", "thu", ("TX", "JS"), ["mon", "fri"])]


def shore_lat(lon: float) -> float:
    """Latitude of the bay shore at `lon` (piecewise linear over SHORE)."""
    for (lon0, lat0), (lon1, lat1) in itertools.pairwise(SHORE):
        if lon <= lon1:
            t = max(0.0, (lon - lon0) / (lon1 - lon0))
            return lat0 + t * (lat1 - lat0)
    return SHORE[-1][1]


def on_land(lat: float, lon: float) -> bool:
    lat_min, lat_max, lon_min, lon_max = BOX
    inside = lat_min + 0.01 <= lat <= lat_max - 0.01 and lon_min + 0.01 <= lon <= lon_max - 0.01
    return inside and lat >= shore_lat(lon) + 0.015


def place(rng: random.Random, lat: float, lon: float, km: tuple[float, float],
          bearing: str | None = None) -> tuple[float, float]:
    """A point `km` away from (lat, lon), roughly towards `bearing` when given, on land.

    Draws until a point is on land (the bearing widens if it keeps landing in the bay);
    the drawing order is fixed, so the result is too.
    """
    for attempt in range(200):
        if bearing is not None and attempt < 50:
            angle = math.radians(BEARINGS[bearing] + rng.uniform(-30, 30))
        else:
            angle = rng.uniform(0, 2 * math.pi)
        dist = rng.uniform(*km)
        new_lat = lat + dist * math.cos(angle) / 111.2
        new_lon = lon + dist * math.sin(angle) / (111.2 * math.cos(math.radians(lat)))
        if on_land(new_lat, new_lon):
            return round(new_lat, 4), round(new_lon, 4)
    raise RuntimeError(f"no point on land near {lat}, {lon}")  # a bad AREAS entry


def hours(kind: str, days: list[str] | None = None) -> dict[str, list[list[str]]]:
    """Opening hours by kind; `days` are a village's five open days."""
    if kind in ("central", "county"):  # closed Monday morning
        return {d: [["13:30" if d == "mon" else "09:00", "20:30"]] for d in WEEK}
    if kind == "town":
        return {d: [] if d == "mon" else [["08:30", "11:30"], ["13:30", "17:00"]] for d in WEEK}
    if kind == "village":
        return {d: [["08:30", "11:30"], ["14:00", "17:00"]] if d in (days or []) else []
                for d in WEEK}
    if kind == "smart_room":
        return {d: [["08:00", "21:00"]] for d in WEEK}
    if kind == "bookmobile_stop":  # a square or a car park: reachable all day
        return {d: [["08:00", "18:00"]] for d in WEEK}
    return {d: [] if d == "sun" else [["06:30", "19:00"]] for d in WEEK}  # hub, book van


def site(code: str, name: str, kind: str, at: tuple[float, float], address: str,
         opening: dict[str, list[list[str]]], courier: list[str]) -> dict[str, Any]:
    return {"code": code, "name": name, "kind": kind, "lat": at[0], "lon": at[1],
            "hub": HUB[0], "address": address, "opening_hours": opening,
            "courier_days": courier}


def is_subdistrict(chinese: str) -> bool:
    return chinese.endswith("街道")


def branch_name(pinyin: str, chinese: str) -> str:
    """`Wuzhen Town Branch (乌镇分馆)`, `Qixing Subdistrict Branch (七星街道分馆)`."""
    kind = "Subdistrict" if is_subdistrict(chinese) else "Town"
    return f"{pinyin} {kind} Branch ({chinese}分馆)"


def short(chinese: str) -> str:
    """The place name without 镇/街道 (乌镇 keeps its 镇: it is part of the name)."""
    for suffix in ("街道", "镇"):
        if chinese.endswith(suffix) and len(chinese) > 2:
            return chinese[: -len(suffix)]
    return chinese


def build() -> dict[str, Any]:
    """The whole reference network document."""
    rng = random.Random(SEED)
    sites: list[dict[str, Any]] = [
        site(HUB[0], "Jiaxing Library Logistics Hub (嘉兴市图书馆物流中心)", "hub",
             (HUB[1], HUB[2]), "1 Wuliu Road, Xiuzhou District, Jiaxing, Zhejiang",
             hours("hub"), WEEK[:6]),
        site(CENTRAL[0], "Jiaxing Library (嘉兴市图书馆)", "central", (CENTRAL[1], CENTRAL[2]),
             "339 Dongsheng East Road, Nanhu District, Jiaxing, Zhejiang", hours("central"),
             WEEK[:6]),
    ]
    rural: dict[str, list[tuple[str, str, tuple[float, float]]]] = {}
    small = 0  # villages and smart rooms so far: their courier days go round SMALL_DAYS
    town_count = 0
    for area in AREAS:
        seat = (area.lat, area.lon)
        where = f"{area.name}, Jiaxing, Zhejiang"
        if area.library:
            sites.append(site(f"JX-{area.code}-01", area.library, "county", seat,
                              f"{rng.randint(1, 399)} {ROADS[rng.randrange(len(ROADS))]}, "
                              f"{where}", hours("county"), WEEK[:6]))
        rural[area.code] = []
        for n, (pinyin, chinese, bearing) in enumerate(area.towns, start=1):
            at = place(rng, area.lat, area.lon, (2, 6) if is_subdistrict(chinese) else (6, 18),
                       bearing)
            label = f"{pinyin} Subdistrict" if is_subdistrict(chinese) else pinyin
            sites.append(site(f"JX-{area.code}-T{n:02d}", branch_name(pinyin, chinese), "town",
                              at, f"{label}, {where}", hours("town"),
                              TOWN_DAYS[town_count % len(TOWN_DAYS)]))
            town_count += 1
            if not is_subdistrict(chinese):
                rural[area.code].append((pinyin, chinese, at))
        names = rng.sample(VILLAGES, area.villages)
        for n, (v_pinyin, v_chinese) in enumerate(names, start=1):
            town, town_cn, town_at = rural[area.code][(n - 1) % len(rural[area.code])]
            days = SMALL_DAYS[small % len(SMALL_DAYS)]
            small += 1
            open_days = WEEK[1:6] if "sat" in days else WEEK[:5]
            sites.append(site(f"JX-{area.code}-V{n:02d}",
                              f"{v_pinyin} Village Branch, {town} ({short(town_cn)}{v_chinese}"
                              "村分馆)", "village", place(rng, *town_at, (1.5, 5)),
                              f"{v_pinyin} Village, {town}, {where}", hours("village", open_days),
                              days))
        for n in range(1, area.rooms + 1):
            if n % 6 == 0:  # one in six in a town centre, the rest in the urban area
                town, town_cn, town_at = rural[area.code][(n // 6 - 1) % len(rural[area.code])]
                at = place(rng, *town_at, (0.3, 1.5))
                name = f"{town} Smart Study Room ({short(town_cn)}智慧书房)"
                address = f"{town}, {where}"
            else:
                at = place(rng, area.lat, area.lon, (0.5, 6))
                name = f"{area.name.split()[0]} Smart Study Room {n} ({area.chinese}智慧书房{n}号)"
                address = f"{rng.randint(1, 399)} {ROADS[rng.randrange(len(ROADS))]}, {where}"
            sites.append(site(f"JX-{area.code}-S{n:02d}", name, "smart_room", at, address,
                              hours("smart_room"), SMALL_DAYS[small % len(SMALL_DAYS)]))
            small += 1
    vehicles: list[dict[str, Any]] = [
        {"id": f"VAN-{n:02d}", "name": f"Delivery van {n} (浙F·W{n:04d})", "kind": "van",
         "depot": HUB[0], "capacity_crates": 60, "shift": ["07:00", "18:00"],
         "days": WEEK[:6]}
        for n in range(1, 13)
    ]
    for number, day, areas, courier in BOOK_VANS:
        van_site = f"JX-BV-{number}"
        sites.append(site(van_site, f"Book Van {int(number)} (流动图书车{int(number)}号)",
                          "book_van", (HUB[1], HUB[2]), "Parked at the logistics hub, "
                          "Xiuzhou District, Jiaxing, Zhejiang", hours("book_van"), courier))
        stops: list[str] = []
        for area_code in areas:
            area = next(a for a in AREAS if a.code == area_code)
            for k in range(1, 6):
                town, town_cn, town_at = rural[area_code][(k * 2) % len(rural[area_code])]
                v_pinyin, v_chinese = VILLAGES[(k * 7 + len(stops)) % len(VILLAGES)]
                code = f"JX-{area_code}-B{k:02d}"
                stops.append(code)
                sites.append(site(code, f"Book van stop {v_pinyin} Village, {town} "
                                  f"({short(town_cn)}{v_chinese}村流动书车点)", "bookmobile_stop",
                                  place(rng, *town_at, (2, 5)),
                                  f"{v_pinyin} Village, {town}, {area.name}, Jiaxing, Zhejiang",
                                  hours("bookmobile_stop"), []))
        # once a month each: weeks 1-4 on its day, 3 + 3 + 2 + 2 stops, one area a day
        rounds = [stops[0:3], stops[5:8], stops[3:5], stops[8:10]]
        times = {3: [("09:00", "10:30"), ("11:00", "12:00"), ("14:00", "16:00")],
                 2: [("09:30", "11:30"), ("14:00", "16:00")]}
        timetable = [{"day": day, "week": week, "stops": [
            {"site": code, "arrive": arrive, "depart": depart}
            for code, (arrive, depart) in zip(calls, times[len(calls)], strict=True)]}
            for week, calls in enumerate(rounds, start=1)]
        vehicles.append({"id": f"BV-{number}", "name": f"Book van {int(number)} (浙F·S{number}88)",
                         "kind": "book_van", "depot": HUB[0], "capacity_crates": 25,
                         "shift": ["08:00", "17:30"], "days": [day], "site": van_site,
                         "timetable": timetable})
    drivers = [{"id": f"D-{n:02d}", "name": f"{pinyin} ({chinese})", "vehicle": v["id"],
                "phone": f"+86 573 8{n:03d} {rng.randint(1000, 9999)}", "active": True}
               for n, ((pinyin, chinese), v) in enumerate(zip(DRIVERS, vehicles, strict=True),
                                                         start=1)]
    return {"network": "Jiaxing reference network",
            "description": "A network of Jiaxing's size for planning and load tests: 265 "
                           "library sites (1 central, 5 county, 66 town, 88 village, 105 "
                           "smart study rooms), one hub, 12 vans, 2 book vans with 10 monthly "
                           "stops each. Generated by devtools/make_network.py; names real "
                           "where known, coordinates plausible, not surveyed.",
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
    sys.stdout.write(render(document))
    kinds = Counter(s["kind"] for s in document["sites"])
    fleet = Counter(v["kind"] for v in document["vehicles"])
    print(f"{len(document['sites'])} sites ({', '.join(f'{k} {n}' for k, n in kinds.items())}), "
          f"vehicles ({', '.join(f'{k} {n}' for k, n in fleet.items())}), "
          f"{len(document['drivers'])} drivers", file=sys.stderr)


if __name__ == "__main__":
    main()
