"""`branchline marc bench`: search across the network at catalogue scale.

A fresh embedded Postgres and broker and the cataloging service; N bibs (default
1,000,000) loaded straight into its table with their search tokens (half with Chinese
titles built from real title words, half English) and one item each on the shelves of 265
branches (a fifth on loan), the search index built, then one request at a time through
`GET /search` for a mix of queries: two- and three-character Chinese, an English word, an
unfinished word, a class-number prefix, an ISBN, and a word filtered by branch and
availability. Every answer carries its facets. Reported: p50/p95/p99 over HTTP per kind,
and the same SQL run straight on Postgres as the raw baseline.

Recall: 200 real Chinese book titles (`data/chinese_titles.tsv`) are loaded among the
million; each is searched by its whole title and by every two-character run in it, and
the share of searches that list the book in the first 20 and the first 100 results is
reported. Results: a markdown table on stdout and `devtools/bench/results/search.{json,md}`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from devtools.bench.run import bench_stack, machine, on_fresh_infra, pct, say, write_results
from devtools.infra import EmbeddedKafka, EmbeddedPostgres
from services.cataloging import domain
from shared.contracts import TOPICS
from shared.messaging.kafka import ensure_topics
from shared.service.auth import issue_token

RESULTS = Path(__file__).parent / "results"
REAL_TITLES = Path(__file__).parent / "data" / "chinese_titles.tsv"
BRANCHES = [f"JX-B{n:03d}" for n in range(265)]

#: Words of real Chinese titles; generated titles join two or three of them.
WORDS = ["平凡", "世界", "围城", "活着", "白鹿原", "红楼", "三国", "演义", "水浒", "西游", "呐喊",
         "边城", "骆驼", "祥子", "四世", "同堂", "茶馆", "朝花", "夕拾", "尘埃", "落定", "长恨",
         "许三观", "卖血记", "丰乳", "肥臀", "穆斯林", "葬礼", "三体", "人生", "草房子", "城南",
         "旧事", "狼图腾", "文化", "苦旅", "地坛", "繁花", "河右岸", "钢铁", "炼成", "中国",
         "历史", "简史", "故事", "研究", "概论", "教程", "儿童", "文学", "诗歌", "散文", "小说"]
ENGLISH = ["history", "world", "garden", "river", "children", "science", "modern", "poetry",
           "letters", "journey", "stories", "china", "library", "ocean", "mountain", "city"]
AUTHORS = ["路遥", "钱锺书", "余华", "莫言", "王安忆", "刘慈欣"]
CLASSES = ["I247.5", "I247.7", "K20", "G624.2", "TP311", "I207.22", "D616", "O4"]

QUERIES = {
    "Chinese, 2 characters": ["世界", "三国", "城南", "文学", "故事", "小说"],
    "Chinese, 3+ characters": ["白鹿原", "狼图腾", "许三观卖血记", "中国历史"],
    "English word": ["river", "history", "garden"],
    "unfinished word": ["scien", "mount"],
    "class-number prefix": ["I247", "TP3"],
    "ISBN": [],  # filled with ISBNs of loaded bibs
    "word, at one branch, on its shelf": ["history", "世界"],
}
FILTERED = {"history": {"branch": BRANCHES[7], "available": "true"},
            "世界": {"branch": BRANCHES[7], "available": "true"}}


def real_titles() -> list[tuple[str, str, str]]:
    """(bib id, title, author) of the real Chinese titles the recall is measured on."""
    rows = [line.split("\t") for line in REAL_TITLES.read_text(encoding="utf-8").splitlines()[1:]]
    return [(str(uuid.uuid5(uuid.NAMESPACE_URL, f"real/{n}")), row[0], row[1])
            for n, row in enumerate(rows) if row and row[0]]


def isbn13(first12: str) -> str:
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
    return first12 + str((10 - total % 10) % 10)


def bib_rows(start: int, n: int, rng: random.Random) -> list[tuple[Any, ...]]:
    now = datetime.now(UTC)
    rows = []
    for i in range(start, start + n):
        if i % 2:
            title = "".join(rng.sample(WORDS, rng.choice((2, 3))))
            author = rng.choice(AUTHORS) + str(i % 97)
        else:
            title = " ".join(rng.sample(ENGLISH, 3)).capitalize()
            author = f"Author {i % 997}"
        rows.append((str(uuid.uuid4()), isbn13(f"9787{i:08d}"), True, title, author, None,
                     2000 + i % 25, rng.choice(CLASSES), "clc",
                     " ".join(domain.search_tokens(title, author)), now))
    return rows


BIB_COLUMNS = ["bib_id", "isbn13", "isbn_valid", "title", "author", "publisher", "year",
               "classification", "classification_scheme", "search_text", "created_at"]


#: The bib table's GIN indexes (see services/cataloging/models.py) and their columns.
SEARCH_INDEXES = {"bib_vector": "search_vector", "bib_owners": "owners",
                  "bib_shelves": "shelves"}


def item_rows(bibs: list[tuple[Any, ...]], rng: random.Random) -> list[tuple[Any, ...]]:
    """One copy per bib, on its owning branch's shelf, a fifth of them on loan."""
    now = datetime.now(UTC)
    rows = []
    for bib in bibs:
        owner = rng.choice(BRANCHES)
        status = "on_loan" if rng.random() < 0.2 else "available"
        rows.append((f"B{bib[1]}", bib[0], "I247.5/1", owner, owner, status, now, now))
    return rows


async def load(dsn: str, n: int) -> float:
    rng = random.Random(7)
    conn = await asyncpg.connect(dsn)
    try:
        t = time.perf_counter()
        for index in SEARCH_INDEXES:  # built once, after the load
            await conn.execute(f"DROP INDEX cataloging.{index}")
        # The bibs are written with their holdings summary (what the item trigger would
        # work out, one bib at a time) and the items without firing it.
        await conn.execute("ALTER TABLE cataloging.item DISABLE TRIGGER USER")
        chunk = 100_000
        for start in range(0, n, chunk):
            bibs = bib_rows(start, min(chunk, n - start), rng)
            items = item_rows(bibs, rng)
            summaries = [(owner, [site] if state == "available" else [])
                         for _, _, _, owner, site, state, _, _ in items]
            await conn.copy_records_to_table(
                "bib", schema_name="cataloging", records=[
                    (*bib, [owner], shelves) for bib, (owner, shelves) in zip(
                        bibs, summaries, strict=True)],
                columns=[*BIB_COLUMNS, "owners", "shelves"])
            await conn.copy_records_to_table(
                "item", schema_name="cataloging", records=items,
                columns=["barcode", "bib_id", "call_number", "owning_branch", "site", "status",
                         "created_at", "cataloged_at"])
            say(f"    {min(start + chunk, n):,} bibs and items loaded")
        now = datetime.now(UTC)
        real = [(bib_id, None, False, title, author or None, None, None, None, None,
                 " ".join(domain.search_tokens(title, author)), now)
                for bib_id, title, author in real_titles()]
        await conn.copy_records_to_table("bib", schema_name="cataloging", records=real,
                                         columns=BIB_COLUMNS)
        await conn.execute("ALTER TABLE cataloging.item ENABLE TRIGGER USER")
        for index, column in SEARCH_INDEXES.items():
            await conn.execute(f"CREATE INDEX {index} ON cataloging.bib USING gin ({column})")
        await conn.execute("ANALYZE cataloging.bib")
        await conn.execute("ANALYZE cataloging.item")
        return time.perf_counter() - t
    finally:
        await conn.close()


RAW_SQL = """
SELECT bib_id, lower(title) = $3 AS exact, title, search_size, owners, shelves
FROM cataloging.bib WHERE lower(title) = $3
UNION
(SELECT bib_id, lower(title) = $3, title, search_size, owners, shelves
 FROM cataloging.bib
 WHERE classification LIKE $2
    OR search_vector @@ to_tsquery('simple'::regconfig, $1)
 LIMIT 1000)
"""


async def measure_queries(url: str, dsn: str, rounds: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    await conn.execute("SET gin_fuzzy_search_limit = 5000")  # as the service does
    QUERIES["ISBN"] = [isbn13(f"9787{i:08d}") for i in (3, 77_777, 400_001)]
    headers = {"Authorization": "Bearer " + issue_token("cataloger")}
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        for kind, terms in QUERIES.items():
            http_ms: list[float] = []
            raw_ms: list[float] = []
            hits: list[int] = []
            for _ in range(rounds):
                for term in terms:
                    extra = FILTERED[term] if kind.startswith("word, at") else {}
                    t = time.perf_counter()
                    r = await client.get(url + "/search", params={"q": term, **extra},
                                         headers=headers)
                    http_ms.append((time.perf_counter() - t) * 1000)
                    r.raise_for_status()
                    hits.append(len(r.json()["results"]))
                    words = domain.search_query(term)
                    if words is not None and not kind.startswith("word, at"):
                        t = time.perf_counter()
                        await conn.fetch(RAW_SQL, words, term.upper() + "%", term.lower())
                        raw_ms.append((time.perf_counter() - t) * 1000)
            out[kind] = {"requests": len(http_ms), "mean_hits": statistics.mean(hits),
                         "p50_ms": pct(http_ms, 50), "p95_ms": pct(http_ms, 95),
                         "p99_ms": pct(http_ms, 99),
                         "raw_sql_p50_ms": pct(raw_ms, 50) if raw_ms else None,
                         "raw_sql_p99_ms": pct(raw_ms, 99) if raw_ms else None}
            say(f"    {kind}: p50 {out[kind]['p50_ms']:.1f} ms, p99 {out[kind]['p99_ms']:.1f} ms")
    await conn.close()
    return out


async def measure_recall(url: str) -> dict[str, Any]:
    """Share of searches for real titles (whole, and each two-character run) that list
    the book in the first 20 / first 100 results."""
    headers = {"Authorization": "Bearer " + issue_token("cataloger")}
    found: dict[str, list[tuple[bool, bool]]] = {"whole title": [], "2 characters": []}
    misses: list[str] = []
    async with httpx.AsyncClient(timeout=30) as client:
        for bib_id, title, _ in real_titles():
            runs = [title[i:i + 2] for i in range(len(title) - 1)]
            pairs = [p for p in dict.fromkeys(runs) if domain.search_query(p) and len(p) == 2
                     and all("\u4e00" <= ch <= "\u9fff" for ch in p)]
            for kind, queries in (("whole title", [title]), ("2 characters", pairs)):
                for query in queries:
                    r = await client.get(url + "/search", params={"q": query, "limit": 100},
                                         headers=headers)
                    r.raise_for_status()
                    ids = [h["bib_id"] for h in r.json()["results"]]
                    found[kind].append((bib_id in ids[:20], bib_id in ids))
                    if bib_id not in ids and len(misses) < 10:
                        misses.append(f"{query} → {title}")
    out: dict[str, Any] = {"titles": len(real_titles()), "examples_missed": misses}
    for kind, hits in found.items():
        out[kind] = {"searches": len(hits),
                     "recall_at_20": sum(a for a, _ in hits) / max(len(hits), 1),
                     "recall_at_100": sum(b for _, b in hits) / max(len(hits), 1)}
        say(f"    recall, {kind}: {out[kind]['recall_at_20']:.1%} in the first 20, "
            f"{out[kind]['recall_at_100']:.1%} in the first 100 ({len(hits)} searches)")
    return out


async def measure(args: argparse.Namespace, pg: EmbeddedPostgres, kafka: EmbeddedKafka,
                  base: Path) -> dict[str, Any]:
    dsn = pg.url.replace("postgresql+asyncpg://", "postgresql://")
    await ensure_topics(kafka.bootstrap, TOPICS, partitions=4)
    stack, _ = bench_stack(pg, kafka, base, {"LOG_LEVEL": "WARNING"})
    try:
        say("  starting cataloging ...")
        stack.start_service("cataloging")
        await asyncio.to_thread(stack.wait_healthy, 90)
        say(f"  loading {args.bibs:,} bibs and building the search index ...")
        load_s = await load(dsn, args.bibs)
        say("  searching ...")
        queries = await measure_queries(stack.url("cataloging"), dsn, args.rounds)
        say("  recall on real Chinese titles ...")
        recall = await measure_recall(stack.url("cataloging"))
    finally:
        await asyncio.to_thread(stack.stop)
    return {"when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "bibs": args.bibs, "load_and_index_s": load_s, "queries": queries,
            "recall": recall}


def render(result: dict[str, Any]) -> str:
    lines = [f"Search bench — {result['when']} — {result['machine']}", "",
             f"{result['bibs']:,} bibs (loaded and indexed in {result['load_and_index_s']:.0f} s); "
             "one request at a time through GET /search; raw SQL = the same query straight "
             "on Postgres.", "",
             "| query kind | requests | mean hits | p50 ms | p95 ms | p99 ms "
             "| raw SQL p50 / p99 ms |",
             "|---|---|---|---|---|---|---|"]
    for kind, q in result["queries"].items():
        raw = (f"{q['raw_sql_p50_ms']:.1f} / {q['raw_sql_p99_ms']:.1f}"
               if q["raw_sql_p50_ms"] is not None else "—")
        lines.append(f"| {kind} | {q['requests']} | {q['mean_hits']:.1f} | {q['p50_ms']:.1f} | "
                     f"{q['p95_ms']:.1f} | {q['p99_ms']:.1f} | {raw} |")
    recall = result.get("recall")
    if recall:
        lines += ["", f"Recall on {recall['titles']} real Chinese titles among the "
                      f"{result['bibs']:,}:", "",
                  "| search by | searches | listed in the first 20 | in the first 100 |",
                  "|---|---|---|---|"]
        for kind in ("whole title", "2 characters"):
            r = recall[kind]
            lines.append(f"| {kind} | {r['searches']} | {r['recall_at_20']:.1%} | "
                         f"{r['recall_at_100']:.1%} |")
        if recall["examples_missed"]:
            lines += ["", "Missed (first 10): " + "; ".join(recall["examples_missed"])]
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    result = on_fresh_infra("Search bench",
                            lambda pg, kafka, base: measure(args, pg, kafka, base))
    write_results(RESULTS, "search", result, render(result))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bibs", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=20,
                        help="times each query is sent")
