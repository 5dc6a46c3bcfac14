"""`branchline marc bench`: search across the network at catalogue scale.

A fresh embedded Postgres and broker and the cataloging service; N bibs (default
1,000,000) loaded straight into its table with their search tokens (half with Chinese
titles built from real title words, half English), the search index built, then one
request at a time through `GET /search` for a mix of queries: two- and three-character
Chinese, an English word, an unfinished word, a class-number prefix, an ISBN. Reported:
p50/p95/p99 over HTTP per kind, and the same SQL run straight on Postgres as the raw
baseline. Results: a markdown table on stdout and `devtools/bench/results/search.{json,md}`.
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
}


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


async def load(dsn: str, n: int) -> float:
    rng = random.Random(7)
    conn = await asyncpg.connect(dsn)
    try:
        t = time.perf_counter()
        await conn.execute("DROP INDEX cataloging.bib_search")  # built once, after the load
        chunk = 100_000
        for start in range(0, n, chunk):
            await conn.copy_records_to_table(
                "bib", schema_name="cataloging",
                records=bib_rows(start, min(chunk, n - start), rng),
                columns=["bib_id", "isbn13", "isbn_valid", "title", "author", "publisher",
                         "year", "classification", "classification_scheme", "search_text",
                         "created_at"])
            say(f"    {min(start + chunk, n):,} bibs loaded")
        await conn.execute("CREATE INDEX bib_search ON cataloging.bib USING gin "
                           "(to_tsvector('simple'::regconfig, search_text))")
        await conn.execute("ANALYZE cataloging.bib")
        return time.perf_counter() - t
    finally:
        await conn.close()


RAW_SQL = """
WITH candidates AS (
    SELECT bib_id FROM cataloging.bib WHERE lower(title) = $3
    UNION
    (SELECT bib_id FROM cataloging.bib
     WHERE classification LIKE $2
        OR to_tsvector('simple'::regconfig, search_text) @@ to_tsquery('simple'::regconfig, $1)
     LIMIT 1000)
)
SELECT b.bib_id FROM cataloging.bib b JOIN candidates USING (bib_id)
ORDER BY lower(b.title) = $3 DESC,
         ts_rank(to_tsvector('simple'::regconfig, b.search_text),
                 to_tsquery('simple'::regconfig, $1)) DESC, b.title, b.bib_id
LIMIT 20
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
                    t = time.perf_counter()
                    r = await client.get(url + "/search", params={"q": term}, headers=headers)
                    http_ms.append((time.perf_counter() - t) * 1000)
                    r.raise_for_status()
                    hits.append(len(r.json()["results"]))
                    words = domain.search_query(term)
                    if words is not None:
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
    finally:
        await asyncio.to_thread(stack.stop)
    return {"when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "bibs": args.bibs, "load_and_index_s": load_s, "queries": queries}


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
