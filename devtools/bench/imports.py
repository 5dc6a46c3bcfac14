"""`branchline marc import-bench`: MARC import throughput and memory at catalogue scale.

A fresh embedded Postgres and broker and the cataloging service. Two generated files of N
records each (default 200,000; `--records 1000000` for the memory figure of a million-record
file): MARC 21 (020, 100, 245, 264, 650, 082) and CNMARC (010, 101, 200, 210, 606, 690,
701), Chinese and English titles. Each is imported through `branchline marc import`'s own
code (HTTP upload → import job → follow it), then a revised file of the same ISBNs with
other titles and subjects: new (every record creates a bib) and matched (every record
matches its bib by ISBN and overlays it with a changed description), matching on both
times. Reported per run: records/s end to end and as the job saw it, the service's peak
resident memory, and CPU seconds per process; the raw baselines from the same run are
pymarc reading the file alone and the import's own reader (records/s on one core), and
Postgres taking the same bibs by COPY. Results: a markdown table on stdout and
`devtools/bench/results/imports.{json,md}`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from pymarc import Field, MARCReader, MARCWriter, Record, Subfield

from devtools import marcimport
from devtools.bench.run import (
    bench_stack,
    cpu_snapshot,
    machine,
    on_fresh_infra,
    say,
    write_results,
)
from devtools.bench.search import AUTHORS, ENGLISH, WORDS, isbn13
from devtools.infra import EmbeddedKafka, EmbeddedPostgres
from services.cataloging import domain
from services.cataloging.marc import MarcFormat, iter_marc
from shared.contracts import TOPICS
from shared.messaging.kafka import ensure_topics
from shared.service.auth import issue_token

RESULTS = Path(__file__).parent / "results"


def _field(tag: str, *subfields: tuple[str, str], ind: str = "  ") -> Field:
    return Field(tag=tag, indicators=[ind[0], ind[1]],
                 subfields=[Subfield(code, value) for code, value in subfields])


def marc21(i: int, rng: random.Random) -> Record:
    record = Record(force_utf8=True)
    title = " ".join(rng.sample(ENGLISH, 3)).capitalize()
    record.add_field(Field(tag="008", data=f"980101s{2000 + i % 25}    cc            000 1 eng d"))
    record.add_field(_field("020", ("a", isbn13(f"9780{i:08d}"))))
    record.add_field(_field("082", ("a", f"{800 + i % 100}.{i % 1000}"), ind="04"))
    record.add_field(_field("100", ("a", f"Author{i % 997}, A."), ind="1 "))
    record.add_field(_field("245", ("a", f"{title} {i} /"), ("c", "A. Author."), ind="10"))
    record.add_field(_field("264", ("a", "Beijing :"), ("b", "Foreign Languages Press,"),
                            ("c", f"{2000 + i % 25}."), ind=" 1"))
    record.add_field(_field("650", ("a", rng.choice(ENGLISH).capitalize()), ind=" 0"))
    return record


def cnmarc(i: int, rng: random.Random) -> Record:
    record = Record(force_utf8=True)
    title = "".join(rng.sample(WORDS, rng.choice((2, 3))))
    author = rng.choice(AUTHORS)
    record.add_field(_field("010", ("a", isbn13(f"9787{i:08d}")), ("d", "CNY39.00")))
    record.add_field(_field("101", ("a", "chi"), ind="0 "))
    record.add_field(_field("200", ("a", f"{title}{i}"), ("f", f"{author}著"), ind="1 "))
    record.add_field(_field("210", ("a", "北京"), ("c", "人民文学出版社"),
                            ("d", str(2000 + i % 25))))
    record.add_field(_field("606", ("a", rng.choice(["长篇小说", "散文集", "中国历史"])), ind="0 "))
    record.add_field(_field("690", ("a", rng.choice(["I247.5", "I266", "K20"])), ("v", "5")))
    record.add_field(_field("701", ("a", author), ("4", "著"), ind=" 0"))
    return record


def write_file(path: Path, n: int, make: Any, seed: int = 11) -> int:
    rng = random.Random(seed)
    with path.open("wb") as out:
        writer = MARCWriter(out)
        for i in range(n):
            writer.write(make(i, rng))
            if (i + 1) % 200_000 == 0:
                say(f"    {i + 1:,} records written")
    return path.stat().st_size


def parse_rate(path: Path, limit: int) -> float:
    """Raw baseline: records/s of pymarc alone reading the file (one core)."""
    t = time.perf_counter()
    n = 0
    with path.open("rb") as stream:
        for _ in MARCReader(stream, to_unicode=True, force_utf8=True):
            n += 1
            if n >= limit:
                break
    return n / (time.perf_counter() - t)


def reader_rate(path: Path, marc_format: MarcFormat, limit: int) -> float:
    """Records/s of the import's own reading alone (records to bib data, one core)."""
    t = time.perf_counter()
    n = 0
    with path.open("rb") as stream:
        for _ in iter_marc(stream, marc_format):
            n += 1
            if n >= limit:
                break
    return n / (time.perf_counter() - t)


async def copy_rate(dsn: str, n: int) -> float:
    """Raw baseline: bibs/s Postgres takes by COPY into a scratch copy of the bib table."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TEMP TABLE scratch (LIKE cataloging.bib INCLUDING ALL)")
        now = datetime.now(UTC)
        rows = [(str(uuid.uuid4()), isbn13(f"9789{i:08d}"), True, f"Title {i}", "Author",
                 "Press", 2001, "chi", "I247.5", "clc", "[]",
                 " ".join(domain.search_tokens(f"Title {i}", "Author")),
                 domain.match_key(f"Title {i}", "Author", 2001), b"x" * 300, now)
                for i in range(n)]
        t = time.perf_counter()
        await conn.copy_records_to_table(
            "scratch", records=rows,
            columns=["bib_id", "isbn13", "isbn_valid", "title", "author", "publisher", "year",
                     "language", "classification", "classification_scheme", "subjects",
                     "search_text", "match_key", "marc", "created_at"])
        return n / (time.perf_counter() - t)
    finally:
        await conn.close()


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def one_import(url: str, path: Path, pid: int, pg_pid: int) -> dict[str, Any]:
    headers = {"Authorization": "Bearer " + issue_token("cataloger")}
    peak = _rss_kib(pid, "VmRSS")
    before_rss = peak
    before_cpu = cpu_snapshot({"cataloging": pid, "postgres": pg_pid})

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, _rss_kib(pid, "VmRSS"))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    size = path.stat().st_size  # noqa: ASYNC240 — one stat, before the clock starts
    t = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        with path.open("rb") as stream:
            totals = await marcimport.import_file(
                stream, size, client, filename=path.name,
                params={"on_match": "overlay"}, headers=headers)
        job = (await client.get(f"/imports/{totals.jobs[-1]}", headers=headers)).json()
    seconds = time.perf_counter() - t
    sampler.cancel()
    after_cpu = cpu_snapshot({"cataloging": pid, "postgres": pg_pid})
    return {"records": totals.records, "created": totals.created,
            "overlaid": totals.overlaid, "rejected": totals.rejected, "seconds": seconds,
            "records_per_s": totals.records / seconds,
            "job_records_per_s": job["records_per_s"],
            "service_rss_before_mib": before_rss / 1024, "service_rss_peak_mib": peak / 1024,
            "cpu_s": {k: after_cpu[k] - before_cpu[k] for k in after_cpu}}


async def measure(args: argparse.Namespace, pg: EmbeddedPostgres, kafka: EmbeddedKafka,
                  base: Path) -> dict[str, Any]:
    dsn = pg.url.replace("postgresql+asyncpg://", "postgresql://")
    await ensure_topics(kafka.bootstrap, TOPICS, partitions=4)
    stack, _ = bench_stack(pg, kafka, base, {"LOG_LEVEL": "WARNING",
                                             "IMPORT_SPOOL_DIR": str(base / "spool")})
    files = {"MARC 21": (base / "marc21.mrc", marc21), "CNMARC": (base / "cnmarc.mrc", cnmarc)}
    # The same ISBNs with other titles and subjects: every record matches and changes its bib.
    revised = {name: base / f"{path.stem}-revised.mrc" for name, (path, _) in files.items()}
    runs: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    try:
        for name, (path, make) in files.items():
            say(f"  writing {args.records:,} {name} records ...")
            size = write_file(path, args.records, make)
            write_file(revised[name], args.records, make, seed=12)
            raw[f"{name} file MB"] = size / 1e6
            raw[f"{name} pymarc read, records/s"] = parse_rate(path, min(args.records, 50_000))
            raw[f"{name} the import's reader alone, records/s"] = reader_rate(
                path, "unimarc" if name == "CNMARC" else "marc21", min(args.records, 50_000))
        say("  starting cataloging ...")
        stack.start_service("cataloging")
        await asyncio.to_thread(stack.wait_healthy, 90)
        raw["Postgres COPY of bibs, rows/s"] = await copy_rate(dsn, 50_000)
        pid = stack.procs["cataloging"].pid
        pg_pid = pg.pid
        assert pg_pid is not None, "Postgres stopped"
        for name, (path, _) in files.items():
            for kind, source in (("new", path), ("matched", revised[name])):
                say(f"  importing {name}, {kind} ...")
                run = await one_import(stack.url("cataloging"), source, pid, pg_pid)
                runs[f"{name}, {kind}"] = run
                say(f"    {run['records_per_s']:,.0f} records/s, service peak "
                    f"{run['service_rss_peak_mib']:.0f} MiB")
    finally:
        await asyncio.to_thread(stack.stop)
    return {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
            "records": args.records, "raw": raw, "runs": runs,
            "bench_process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            / 1024}


def render(result: dict[str, Any]) -> str:
    lines = [f"MARC import bench — {result['when']} — {result['machine']}", "",
             f"{result['records']:,} records per file, imported through `branchline marc "
             "import` (upload → import job, batches of 5,000, matching by ISBN then title + "
             "author + year); new = every record creates a bib, matched = a revised file whose "
             "every record matches its bib by ISBN and overlays it with another title and "
             "subjects.", "",
             "| run | records/s end to end | records/s (job) | service RSS before → peak MiB "
             "| CPU s: cataloging / Postgres |",
             "|---|---|---|---|---|"]
    for name, run in result["runs"].items():
        lines.append(
            f"| {name} | {run['records_per_s']:,.0f} | {run['job_records_per_s'] or 0:,.0f} | "
            f"{run['service_rss_before_mib']:.0f} → {run['service_rss_peak_mib']:.0f} | "
            f"{run['cpu_s']['cataloging']:.0f} / {run['cpu_s']['postgres']:.0f} |")
    lines += ["", "Raw baselines (same run):", ""]
    lines += [f"- {k}: {v:,.0f}" for k, v in result["raw"].items()]
    lines.append(f"- the importing client's (this bench's) peak RSS: "
                 f"{result['bench_process_peak_rss_mib']:.0f} MiB")
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    result = on_fresh_infra("MARC import bench",
                            lambda pg, kafka, base: measure(args, pg, kafka, base))
    write_results(RESULTS, "imports", result, render(result))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, default=200_000,
                        help="records per file (1000000 for the million-record memory figure)")
