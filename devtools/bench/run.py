"""`make bench`: branch check-ins of items owned elsewhere, through the running system.

It starts its own embedded Postgres and broker (fresh, on free ports) and the four services
as separate processes, then measures, in the same run on the same machine:

* raw baselines: aiokafka produce+consume messages/s; asyncpg single-row transaction
  commits/s (one connection, and eight concurrent connections);
* sustained throughput: N check-ins pushed at once, counted until every one has become a
  `logistics.shipment_created` (check-in → circulation → transfer → logistics → shipment);
* latency at a fixed offered rate (default 1,000/s): check-in sent → `shipment_created`
  seen, p50/p95/p99.

Results: a markdown table on stdout and `devtools/bench/results/latest.{json,md}`.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from devtools.bench import http_probe
from devtools.bench.common import OWNER, RETURNED_AT, cataloged, checkin, pct, say
from devtools.infra import EmbeddedKafka, EmbeddedPostgres, free_port
from devtools.stack import DEMO_NETWORK, Stack, http
from shared.contracts import CONTENT_TYPE, SERVICES, TOPICS
from shared.messaging.kafka import ensure_topics
from shared.service.auth import issue_token
from shared.service.settings import Settings

HEADERS = [("content-type", CONTENT_TYPE.encode())]


# --- raw baselines ----------------------------------------------------------------------------


async def raw_kafka(bootstrap: str, n: int = 50_000, size: int = 300) -> dict[str, float]:
    """The same client the services use, with the relay's producer settings."""
    topic = f"bench.raw.{uuid.uuid4().hex[:6]}"
    await ensure_topics(bootstrap, [topic], partitions=4)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2,
                                max_batch_size=512 * 1024)
    await producer.start()
    payload = b"x" * size
    t0 = time.perf_counter()
    futures = [await producer.send(topic, value=payload, key=str(i).encode()) for i in range(n)]
    await asyncio.gather(*futures)
    produce_s = time.perf_counter() - t0
    await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(4)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    seen = 0
    t1 = time.perf_counter()
    while seen < n:
        batch = await consumer.getmany(timeout_ms=500, max_records=5000)
        seen += sum(len(v) for v in batch.values())
        if time.perf_counter() - t1 > 60:
            break
    consume_s = time.perf_counter() - t1
    await consumer.stop()
    return {"messages": n, "bytes": size, "produce_per_s": n / produce_s,
            "consume_per_s": seen / consume_s, "produce_consume_per_s": n / (produce_s + consume_s)}


async def raw_postgres(dsn: str, seconds: float = 3.0) -> dict[str, float]:
    """Single-row INSERT transactions, each committed (fsync on), sequential and concurrent."""
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE IF NOT EXISTS bench_raw (id bigserial primary key, v text)")
    count = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        async with conn.transaction():
            await conn.execute("INSERT INTO bench_raw (v) VALUES ($1)", "x")
        count += 1
    sequential = count / (time.perf_counter() - t0)
    await conn.close()

    async def worker(stop_at: float) -> int:
        c = await asyncpg.connect(dsn)
        done = 0
        while time.perf_counter() < stop_at:
            async with c.transaction():
                await c.execute("INSERT INTO bench_raw (v) VALUES ($1)", "x")
            done += 1
        await c.close()
        return done

    t1 = time.perf_counter()
    results = await asyncio.gather(*(worker(t1 + seconds) for _ in range(8)))
    concurrent = sum(results) / (time.perf_counter() - t1)
    return {"commits_per_s_1_conn": sequential, "commits_per_s_8_conns": concurrent}


# --- the system -------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


#: The write-ahead log a phase wrote, by table and kind of record (pg_walinspect, shipped
#: with Postgres): where Postgres's writing goes, steadier between runs than any time.
_WAL_BY_TABLE = """
    WITH r AS (SELECT record_type, record_length,
                      (regexp_match(block_ref, 'rel \\d+/\\d+/(\\d+)'))[1]::oid AS node
               FROM pg_get_wal_records_info($1, $2))
    SELECT coalesce(n.nspname || '.' || c.relname, 'other') AS relation, record_type,
           count(*) AS records, sum(record_length) AS bytes
    FROM r LEFT JOIN pg_class c ON c.relfilenode = r.node
           LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
    GROUP BY 1, 2 ORDER BY bytes DESC LIMIT $3"""


async def wal_position(dsn: str) -> int:
    """Where Postgres's write-ahead log is now (asyncpg reads an LSN as an integer)."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT pg_current_wal_lsn()"))
    finally:
        await conn.close()


#: The WAL read for the breakdown: this much from the middle of what the phase wrote, scaled
#: to the whole (reading all of it took Postgres seconds of CPU before the next phase).
WAL_SAMPLE_BYTES = 32 * 1024 * 1024


async def wal_written(dsn: str, since: int, per: int, top: int = 8) -> dict[str, Any]:
    """WAL bytes written since `since`, per `per` (check-ins), and the `top` tables and
    record kinds that wrote most of it, from a sample of it (empty where pg_walinspect is
    not installed)."""
    conn = await asyncpg.connect(dsn)
    try:
        now = int(await conn.fetchval("SELECT pg_current_wal_lsn()"))
        total = float(now - since)
        middle = since + (now - since) // 2
        start = max(since, middle - WAL_SAMPLE_BYTES // 2)
        end = min(now, middle + WAL_SAMPLE_BYTES // 2)
        scale = total / max(1, end - start) / per
        by_table: list[dict[str, Any]] = []
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
            rows = await conn.fetch(_WAL_BY_TABLE, start, end, top)
            by_table = [{"relation": r["relation"], "record": r["record_type"],
                         "records_per_checkin": round(r["records"] * scale, 2),
                         "bytes_per_checkin": round(float(r["bytes"]) * scale)} for r in rows]
        except asyncpg.PostgresError as exc:
            say(f"    (no WAL breakdown: {exc})")
        return {"bytes_per_checkin": round(total / per), "top": by_table}
    finally:
        await conn.close()


def _cpu_of(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def cpu_snapshot(processes: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process (Postgres: postmaster + backends)."""
    snap = {}
    for name, pid in processes.items():
        pids = [pid, *_children(pid)] if name == "postgres" else [pid]
        snap[name] = sum(_cpu_of(p) for p in pids)
    snap["bench (this load generator)"] = _cpu_of(os.getpid())
    return snap


#: The hops a check-in's shipment takes, each timed from the records themselves: the
#: envelope's `time` is when the handler emitted the event (in its transaction), the Kafka
#: record's timestamp when the relay sent it.
STAGES = (
    ("circulation handled", "check-in sent → circulation emitted transfer_requested"),
    ("circulation relayed", "→ transfer_requested sent to the broker (commit + relay)"),
    ("logistics handled", "→ logistics emitted shipment_created"),
    ("logistics relayed", "→ shipment_created sent to the broker (commit + relay)"),
    ("seen", "→ the bench read it"),
)


class Watcher:
    """Reads logistics.shipments and notes when each watched barcode's shipment appears;
    and, for the latency runs' stage breakdown, when each hop before it happened."""

    TOPICS = {"logistics.shipments": b'"logistics.shipment_created"',
              "circulation.transfers": b'"circulation.transfer_requested"'}

    def __init__(self, bootstrap: str, topic: str = "logistics.shipments") -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.arrived: dict[bytes, float] = {}
        #: per topic and key: (the record's value, its timestamp in wall-clock seconds)
        self.hops: dict[str, dict[bytes, tuple[bytes, float]]] = {t: {} for t in self.TOPICS}
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap,
                                          enable_auto_commit=False, fetch_max_wait_ms=20)
        await self._consumer.start()
        tps = [TopicPartition(t, p) for t in self.TOPICS for p in range(4)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.perf_counter()
            for tp, records in batch.items():
                marker, hops = self.TOPICS[tp.topic], self.hops[tp.topic]
                for r in records:
                    if r.key is None or r.key in hops or marker not in r.value:
                        continue
                    hops[r.key] = (r.value, r.timestamp / 1000)  # decoded in `stages`
                    if tp.topic == self.topic:
                        self.arrived[r.key] = now

    def stages(self, sent: dict[bytes, float]) -> dict[str, dict[str, float]]:
        """p50/p99 ms of each hop (`STAGES`) over the check-ins sent (perf_counter times)."""
        wall = time.time() - time.perf_counter()
        spans: dict[str, list[float]] = {name: [] for name, _ in STAGES}
        transfers, shipments = self.hops["circulation.transfers"], self.hops[self.topic]
        for key, at in sent.items():
            if key not in transfers or key not in shipments or key not in self.arrived:
                continue
            points = (at + wall, _emitted(transfers[key][0]), transfers[key][1],
                      _emitted(shipments[key][0]), shipments[key][1], self.arrived[key] + wall)
            for (name, _), start, end in zip(STAGES, points[:-1], points[1:], strict=True):
                spans[name].append((end - start) * 1000)
        return {name: {"p50_ms": pct(v, 50), "p99_ms": pct(v, 99)} for name, v in spans.items()}

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        if self._consumer:
            await self._consumer.stop()


def _emitted(value: bytes) -> float:
    """When the event was emitted: its envelope's `time`, in wall-clock seconds."""
    return datetime.fromisoformat(json.loads(value)["time"]).timestamp()


async def wait_count(dsn: str, sql: str, target: int, timeout: float, label: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        last = -1
        while True:
            n = await conn.fetchval(sql)
            if n >= target:
                return
            if n != last:
                say(f"    {label}: {n}/{target}")
                last = n
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: {label} stuck at {n}/{target} after {timeout:.0f}s")
            await asyncio.sleep(1.0)
    finally:
        await conn.close()


async def raw_kafka_hop(bootstrap: str, rate: int = 1000, seconds: float = 5.0,
                        ) -> dict[str, float]:
    """One hop at a fixed rate: produce (acks=all, the relay's settings) → a consumer
    (20 ms fetch wait) sees it; p50/p99 ms. A check-in → shipment crosses three."""
    topic = f"bench.hop.{uuid.uuid4().hex[:6]}"
    await ensure_topics(bootstrap, [topic], partitions=4)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=20)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(4)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    latencies: list[float] = []
    n = int(rate * seconds)

    async def read() -> None:
        while len(latencies) < n:
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.perf_counter()
            latencies.extend((now - float(r.value)) * 1000 for rs in batch.values() for r in rs)

    reader = asyncio.create_task(read())
    start = time.perf_counter()
    futures = []
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        futures.append(await producer.send(topic, value=repr(time.perf_counter()).encode(),
                                           key=str(i).encode()))
    await asyncio.gather(*futures)
    try:
        await asyncio.wait_for(reader, timeout=30)
    except TimeoutError:
        pass
    await producer.stop()
    await consumer.stop()
    return {"rate": rate, "p50_ms": pct(latencies, 50), "p99_ms": pct(latencies, 99)}


async def offer(producer: AIOKafkaProducer, codes: list[str], rate: int,
                ) -> tuple[dict[bytes, float], float]:
    """Send one check-in per code at `rate`/s (open loop); when each was sent, and the rate
    really offered."""
    sent: dict[bytes, float] = {}
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    t_start = time.perf_counter()
    futs = []
    for i in range(0, len(codes), per_tick):
        delay = t_start + (i / per_tick) * tick - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        for b in codes[i:i + per_tick]:
            key = b.encode()
            sent[key] = time.perf_counter()
            futs.append(await producer.send("branch.events", value=checkin(b, RETURNED_AT),
                                            key=key, headers=HEADERS))
    await asyncio.gather(*futs)
    return sent, len(codes) / (time.perf_counter() - t_start)


class Phases:
    """CPU cores each process used during each measured phase."""

    def __init__(self, processes: dict[str, int]) -> None:
        self.processes = processes
        self.cores: dict[str, dict[str, float]] = {}

    def _by_pid(self) -> dict[str, dict[int, float]]:
        out = {}
        for name, pid in self.processes.items():
            pids = [pid, *_children(pid)] if name == "postgres" else [pid]
            out[name] = {p: _cpu_of(p) for p in pids}
        out["bench (this load generator)"] = {os.getpid(): _cpu_of(os.getpid())}
        return out

    @contextlib.asynccontextmanager
    async def phase(self, name: str) -> AsyncIterator[None]:
        # The bench's own collector is kept out of the measured phases, as timeit does: the
        # watcher's growing dicts made its full collections 96-134 ms (5 in a 35 s run), and
        # a shipment arriving then was seen that much later. What the phase leaves is
        # collected between phases, and what is kept is frozen (never scanned again).
        gc.collect()
        gc.freeze()
        gc.disable()
        # Per pid: a Postgres backend that ends during the phase must not count negative.
        before, t = self._by_pid(), time.perf_counter()
        try:
            yield
        finally:
            gc.enable()
        after, elapsed = self._by_pid(), time.perf_counter() - t
        self.cores[name] = {
            proc: round(sum(cpu - before[proc].get(pid, 0.0) for pid, cpu in pids.items()
                            if cpu) / elapsed, 3)
            for proc, pids in after.items()}


async def run_system(stack: Stack, settings: Settings, args: argparse.Namespace,
                     dsn: str, procs_extra: dict[str, int]) -> dict[str, Any]:
    bootstrap = settings.kafka_bootstrap_servers
    n_tp, seconds = args.items, args.seconds
    rates = [int(r) for r in str(args.rate).split(",")]
    tp_codes = [f"BT{i:07d}" for i in range(n_tp)]
    lat_sets = {rate: [f"BL{rate}-{i:07d}" for i in range(rate * seconds)] for rate in rates}
    targets = ["circulation", "circulation-http"]
    calls = ["POST /branch-events", "GET /items/{barcode}"]
    load_sets = {(t, c): [f"BG{j}{k}-{i:07d}" for i in range(args.load_rate * seconds)]
                 for j, t in enumerate(targets) for k, c in enumerate(calls)}
    desk_sets = {t: [f"BD{j}-{i:07d}" for i in range(args.http_rate * seconds + 100)]
                 for j, t in enumerate(targets)}
    every = (tp_codes + [c for cs in lat_sets.values() for c in cs]
             + [c for cs in load_sets.values() for c in cs]
             + [c for cs in desk_sets.values() for c in cs])

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2,
                                max_batch_size=512 * 1024)
    await producer.start()
    say(f"  seeding {len(every):,} items owned by {OWNER} ...")
    futs = [await producer.send("cataloging.items", value=cataloged(b), key=b.encode(),
                                headers=HEADERS) for b in every]
    await asyncio.gather(*futs)
    await wait_count(dsn, "SELECT count(*) FROM circulation.item", len(every), 600,
                     "items registered")

    watcher = Watcher(bootstrap, "logistics.shipments")
    await watcher.start()
    processes = {name: proc.pid for name, proc in stack.procs.items()}
    processes.update(procs_extra)
    phases = Phases(processes)

    say(f"  throughput: {n_tp:,} check-ins at {RETURNED_AT} pushed at once ...")
    wal_from = await wal_position(dsn)
    async with phases.phase("throughput"):
        t0 = time.perf_counter()
        futs = [await producer.send("branch.events", value=checkin(b, RETURNED_AT),
                                    key=b.encode(), headers=HEADERS) for b in tp_codes]
        await asyncio.gather(*futs)
        pushed_s = time.perf_counter() - t0
        await _arrive(watcher, {b.encode() for b in tp_codes}, 600)
    t_end = max(watcher.arrived[b.encode()] for b in tp_codes)
    throughput = n_tp / (t_end - t0)
    wal = await wal_written(dsn, wal_from, n_tp)
    say(f"    {throughput:,.0f} check-ins/s fully turned into shipments")

    latency = []
    for rate, codes in lat_sets.items():
        async with phases.phase(f"latency {rate}/s"):
            latency.append(await _latency_run(producer, watcher, rate, codes))

    http_runs = []
    desk = {"Authorization": "Bearer " + issue_token("branch_system", site=RETURNED_AT,
                                                     key=stack.key)}
    admin = {"Authorization": "Bearer " + issue_token("admin", key=stack.key)}
    # A session of its own, as the services have: with the kernel's autogroups a session
    # is what shares the cores, and in this one's the load generator starved the probe
    # (its own event loop stalled 87-158 ms, counted as the service's latency). A desk is
    # another machine, not a thread of the load.
    prober = concurrent.futures.ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=os.setsid)
    prober.submit(int).result()  # started before the clock runs
    for child in multiprocessing.active_children():
        if child.pid is not None:
            phases.processes["bench HTTP client"] = child.pid
    for target in targets:
        if target == "circulation-http" and args.consumer_nice:
            # The consuming process was measured as a one-process deployment runs it (at
            # nice 0); beside an HTTP-only process the consumers give way to the desks.
            await _renice_consumers(stack, args, phases)
        for call in calls:
            say(f"  HTTP {call} at {args.http_rate}/s on {target}, while "
                f"{args.load_rate:,} check-ins/s are consumed ...")
            await asyncio.sleep(2)
            async with phases.phase(f"HTTP {call} on {target}"):
                load = asyncio.create_task(offer(producer, load_sets[(target, call)],
                                                 args.load_rate))
                await asyncio.sleep(1)  # the consumers are busy before the first call
                # In a process of its own: this one is busy producing the load.
                results = await asyncio.get_running_loop().run_in_executor(
                    prober, http_probe.probe, stack.url(target), call, args.http_rate,
                    seconds - 2, desk_sets[target], desk, admin)
                await load
            for r in results:
                r["process"] = target
            http_runs.extend(results)
    prober.shutdown()
    await watcher.stop()
    await producer.stop()
    return {
        "throughput": {"checkins": n_tp, "push_s": pushed_s, "elapsed_s": t_end - t0,
                       "checkins_per_s": throughput,
                       "cpu_cores_used": phases.cores["throughput"], "wal": wal},
        "latency": latency,
        "http": http_runs,
        "cpu_cores_by_phase": phases.cores,
    }


async def _renice_consumers(stack: Stack, args: argparse.Namespace, phases: Phases) -> None:
    """Start the consuming processes again with PROCESS_NICE (docs/operations.md), as a
    deployment that puts desks first does: the HTTP-only process is answered first when
    the cores are full, and the events wait a little instead."""
    say(f"  restarting the consuming processes with PROCESS_NICE={args.consumer_nice} ...")
    consuming = {name: how for name, how in stack.started.items()
                 if how[2].get("CONSUME") != "false"}
    for name in consuming:
        stack.procs[name].terminate()
    for name in consuming:
        await asyncio.to_thread(stack.procs[name].wait, 30)
    for name, (service, replica, env) in consuming.items():
        stack.start_service(service, replica=replica,
                            env={**env, "PROCESS_NICE": str(args.consumer_nice)})
        phases.processes[name] = stack.procs[name].pid
    await asyncio.to_thread(stack.wait_healthy, 90)


async def _arrive(watcher: Watcher, wanted: set[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_report = 0.0
    while (done := sum(1 for k in wanted if k in watcher.arrived)) < len(wanted):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: only {done}/{len(wanted)} shipments after {timeout:.0f} s")
        if time.monotonic() - last_report > 2:
            say(f"    shipments created: {done:,}/{len(wanted):,}")
            last_report = time.monotonic()
        await asyncio.sleep(0.05)


async def _latency_run(producer: AIOKafkaProducer, watcher: Watcher, rate: int,
                       codes: list[str]) -> dict[str, Any]:
    """Offer check-ins at a fixed rate; time each from send to its shipment_created."""
    n_lat = len(codes)
    say(f"  latency: {rate}/s for {n_lat // rate}s ({n_lat} check-ins) ...")
    await asyncio.sleep(2)  # let the previous run's tail drain
    sent, offered = await offer(producer, codes, rate)
    deadline = time.monotonic() + 300
    while sum(1 for k in sent if k in watcher.arrived) < n_lat:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    latencies = [(watcher.arrived[k] - t) * 1000 for k, t in sent.items() if k in watcher.arrived]
    say(f"    p50 {pct(latencies, 50):.0f} ms, p99 {pct(latencies, 99):.0f} ms")
    stages = watcher.stages(sent)
    say("    by hop, p50 / p99 ms: " + ", ".join(
        f"{name} {v['p50_ms']:.0f} / {v['p99_ms']:.0f}" for name, v in stages.items()))
    return {"rate": rate, "offered_per_s": offered, "checkins": n_lat,
            "completed": len(latencies), "p50_ms": pct(latencies, 50),
            "p95_ms": pct(latencies, 95), "p99_ms": pct(latencies, 99),
            "max_ms": max(latencies, default=float("nan")),
            "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
            "stages": stages}


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.3f}" if base else "—"


def render(result: dict[str, Any]) -> str:
    b, s = result["baselines"], result["system"]
    k, p, hop = b["kafka"], b["postgres"], b["kafka_hop"]
    t = s["throughput"]
    replicas = result["parameters"].get("replicas", 1)
    lines = [
        f"# Branchline bench — {result['when']}",
        "",
        f"Machine: {result['machine']}. Everything (broker, Postgres, the services, this "
        f"load generator) on this one machine; circulation and logistics each as {replicas} "
        "consuming process(es), plus one HTTP-only circulation process (`CONSUME=false`, "
        "`RELAY=false`); "
        "the HTTP runs on `circulation` (consuming) are at nice 0, as a one-process "
        "deployment runs; before those on `circulation-http` the consuming processes are "
        f"started again with `PROCESS_NICE={result['parameters'].get('consumer_nice', 0)}`.",
        "",
        "| measure | value | ratio to raw baseline | goal |",
        "|---|---|---|---|",
        f"| sustained check-ins → shipments | **{t['checkins_per_s']:,.0f} /s** "
        f"({t['checkins']:,} in {t['elapsed_s']:.1f} s) | "
        f"{_ratio(t['checkins_per_s'], k['produce_consume_per_s'])} of raw Kafka "
        f"produce+consume; {_ratio(t['checkins_per_s'], p['commits_per_s_8_conns'])} of raw "
        "Postgres commits (8 conns) | ≥ 2,000 /s |",
    ]
    for lat in s["latency"]:
        lines.append(
            f"| check-in → shipment_created at {lat['offered_per_s']:,.0f}/s offered: "
            f"p50 / p95 / p99 | {lat['p50_ms']:.0f} / {lat['p95_ms']:.0f} / "
            f"**{lat['p99_ms']:.0f} ms** ({lat['completed']:,}/{lat['checkins']:,} completed) "
            f"| p99 {_ratio(lat['p99_ms'], hop['p99_ms'])} times one raw Kafka hop's p99 | "
            f"{'p99 ≤ 250 ms' if lat['rate'] == 1000 else ''} |")
    live: dict[str, float] = {}
    for run in s.get("http", []):
        if run["call"].startswith("GET /live"):
            live[run["process"]] = max(live.get(run["process"], 0.0), run["p99_ms"])
    for run in s.get("http", []):
        if run["call"].startswith("GET /live"):
            continue
        lines.append(
            f"| {run['call']} at {run['rate']}/s on `{run['process']}` while "
            f"{result['parameters']['load_rate']:,} check-ins/s are consumed: p50 / p99 | "
            f"{run['p50_ms']:.1f} / **{run['p99_ms']:.1f} ms** ({run['errors']} errors"
            + (f"; the {run['warm_up_calls']} warm-up calls before them, not counted: p99 "
               f"{run['warm_up_p99_ms']:.1f} ms" if "warm_up_calls" in run else "")
            + ") | "
            f"p99 {_ratio(run['p99_ms'], live.get(run['process'], 0.0))} times `GET /live` p99 "
            f"on it ({live.get(run['process'], 0.0):.1f} ms) | p99 ≤ 50 ms |")
    lines += [
        f"| raw Kafka produce (aiokafka, acks=all) | {k['produce_per_s']:,.0f} msg/s "
        "| baseline | |",
        f"| raw Kafka consume (aiokafka) | {k['consume_per_s']:,.0f} msg/s | baseline | |",
        f"| raw Kafka produce+consume | {k['produce_consume_per_s']:,.0f} msg/s | baseline | |",
        f"| raw Kafka hop at {hop['rate']:,}/s, p50 / p99 | {hop['p50_ms']:.1f} / "
        f"{hop['p99_ms']:.1f} ms | baseline | |",
        f"| raw Postgres single-row commits, 1 connection | "
        f"{p['commits_per_s_1_conn']:,.0f} /s | baseline | |",
        f"| raw Postgres single-row commits, 8 connections | "
        f"{p['commits_per_s_8_conns']:,.0f} /s | baseline | |",
    ]
    with_stages = [lat for lat in s["latency"] if lat.get("stages")]
    if with_stages:
        lines += ["", "Where a check-in's time goes, hop by hop (p50 / p99 ms; from the events' "
                  "own times: when each handler emitted, when each relay sent):", "",
                  "| hop | " + " | ".join(f"{lat['rate']:,}/s" for lat in with_stages) + " |",
                  "|---|" + "---|" * len(with_stages)]
        for name, meaning in STAGES:
            lines.append(f"| {meaning} | " + " | ".join(
                f"{lat['stages'][name]['p50_ms']:.0f} / {lat['stages'][name]['p99_ms']:.0f}"
                for lat in with_stages) + " |")
    phases = s.get("cpu_cores_by_phase", {"throughput": t["cpu_cores_used"]})
    names = sorted({n for cores in phases.values() for n in cores},
                   key=lambda n: -phases.get("throughput", {}).get(n, 0.0))
    lines += ["", f"CPU cores used per process and phase ({os.cpu_count()} available):", "",
              "| process | " + " | ".join(phases) + " |",
              "|---|" + "---|" * len(phases)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(
            f"{cores.get(name, 0.0):.2f}" for cores in phases.values()) + " |")
    per_checkin = cpu_ms_per_checkin(result)
    lines += ["", "CPU per check-in in the throughput phase (ms; steadier between runs than "
              "the rates, which also move with how fast this machine is that minute): "
              + ", ".join(f"{name} {ms:.3f}" for name, ms in per_checkin.items()) + "."]
    wal = s["throughput"].get("wal")
    if wal:
        lines += ["", f"Postgres's write-ahead log in the throughput phase: "
                  f"**{wal['bytes_per_checkin']:,} bytes per check-in**"
                  + (", most of it (from the middle 32 MB of it, scaled):" if wal["top"]
                     else "."), ""]
        if wal["top"]:
            lines += ["| table | WAL record | records per check-in | bytes per check-in |",
                      "|---|---|---|---|"]
            lines += [f"| {t['relation']} | {t['record']} | {t['records_per_checkin']} | "
                      f"{t['bytes_per_checkin']:,} |" for t in wal["top"]]
    return "\n".join(lines) + "\n"


def cpu_ms_per_checkin(result: dict[str, Any]) -> dict[str, float]:
    """CPU milliseconds each process spent per check-in while the throughput run drained."""
    t = result["system"]["throughput"]
    return {name: cores * t["elapsed_s"] * 1000 / t["checkins"]
            for name, cores in sorted(t["cpu_cores_used"].items(), key=lambda kv: -kv[1])
            if cores > 0.005}


def headline(result: dict[str, Any]) -> dict[str, float]:
    """The figures two runs are compared by, by name."""
    s, b = result["system"], result["baselines"]
    out = {"check-ins/s sustained": s["throughput"]["checkins_per_s"],
           "raw Kafka produce+consume msg/s": b["kafka"]["produce_consume_per_s"],
           "raw Postgres commits/s (8 conns)": b["postgres"]["commits_per_s_8_conns"]}
    for name, ms in cpu_ms_per_checkin(result).items():
        out[f"{name} CPU ms per check-in"] = ms
    if "wal" in s["throughput"]:
        out["Postgres WAL bytes per check-in"] = s["throughput"]["wal"]["bytes_per_checkin"]
    for lat in s["latency"]:
        out[f"latency p50 ms at {lat['rate']}/s"] = lat["p50_ms"]
        out[f"latency p99 ms at {lat['rate']}/s"] = lat["p99_ms"]
    for run in s.get("http", []):
        out[f"{run['call']} p99 ms on {run.get('process', 'circulation')}"] = run["p99_ms"]
    return out


def _figure(value: float) -> str:
    """One decimal, or three below 10 (milliseconds of CPU per check-in)."""
    return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"


def compare(result: dict[str, Any], previous: dict[str, Any]) -> str:
    """This run beside an earlier one: each headline figure and its change."""
    now, then = headline(result), headline(previous)
    lines = [f"Compared with the run of {previous.get('when', '?')}:", "",
             "| measure | then | now | change |", "|---|---|---|---|"]
    for name, value in now.items():
        old = then.get(name)
        change = f"{(value - old) / old * 100:+.0f} %" if old else "—"
        lines.append(f"| {name} | {'—' if old is None else _figure(old)} | {_figure(value)} "
                     f"| {change} |")
    return "\n".join(lines) + "\n"


async def measure(args: argparse.Namespace, pg: EmbeddedPostgres, kafka: EmbeddedKafka,
                  base: Path) -> dict[str, Any]:
    dsn = pg.url.replace("postgresql+asyncpg://", "postgresql://")
    await ensure_topics(kafka.bootstrap, TOPICS, partitions=4)
    say("  raw baseline: Kafka produce+consume ...")
    kafka_raw = await raw_kafka(kafka.bootstrap)
    say(f"  raw baseline: one Kafka hop at {args.load_rate:,}/s ...")
    hop = await raw_kafka_hop(kafka.bootstrap, args.load_rate)
    say("  raw baseline: Postgres single-row commits ...")
    pg_raw = await raw_postgres(dsn)
    stack, settings = bench_stack(pg, kafka, base, {
        "KAFKA_SESSION_TIMEOUT_MS": "2000", "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "LOG_LEVEL": "WARNING", "ROUTE_PLAN_AT": ""})
    try:
        say(f"  starting the four services (circulation and logistics x{args.replicas}, "
            "and an HTTP-only circulation) ...")
        for name in SERVICES:
            stack.start_service(name)
        for name in ("circulation", "logistics"):
            for n in range(2, args.replicas + 1):
                stack.start_service(name, replica=str(n))
        stack.start_service("circulation", replica="http",
                            env={"CONSUME": "false", "RELAY": "false"})
        await asyncio.to_thread(stack.wait_healthy, 90)
        network = json.loads(await asyncio.to_thread(DEMO_NETWORK.read_text))
        await asyncio.to_thread(http, "POST", stack.url("logistics") + "/network", network,
                                issue_token("admin", key=stack.key), 30)
        extra = {"postgres": pg.pid or 0, "kafka broker": kafka.pid or 0}
        system = await run_system(stack, settings, args, dsn, extra)
    finally:
        await asyncio.to_thread(stack.stop)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": {"items": args.items, "rate": args.rate, "seconds": args.seconds,
                       "replicas": args.replicas, "http_rate": args.http_rate,
                       "consumer_nice": args.consumer_nice,
                       "load_rate": args.load_rate},
        "baselines": {"kafka": kafka_raw, "kafka_hop": hop, "postgres": pg_raw},
        "system": system,
    }


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}")


def bench_stack(pg: EmbeddedPostgres, kafka: EmbeddedKafka, base: Path,
                extra_env: dict[str, str]) -> tuple[Stack, Settings]:
    """The services' process supervisor wired to this bench's own Postgres and broker."""
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, database_url=pg.url)
    stack = Stack(settings, base, {n: free_port() for n in SERVICES}, base / "logs",
                  extra_env=extra_env)
    stack.database_url, stack.kafka_bootstrap = pg.url, kafka.bootstrap
    return stack, settings


def write_results(folder: Path, stem: str, result: dict[str, Any], table: str) -> None:
    """`<stem>.json` and `<stem>.md` in `folder`, then the table on stdout."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (folder / f"{stem}.md").write_text(table)
    say("")
    say(table)
    say(f"written: {folder / (stem + '.json')} and {folder / (stem + '.md')}")


def on_fresh_infra(
    label: str,
    measure: Callable[[EmbeddedPostgres, EmbeddedKafka, Path],
                      Coroutine[Any, Any, dict[str, Any]]],
) -> dict[str, Any]:
    """Run `measure` against a new embedded Postgres and broker, removed afterwards, so a
    bench never inherits another run's data."""
    base = Path(tempfile.mkdtemp(prefix="branchline-bench-", dir="/tmp"))
    base.chmod(0o755)
    pg = EmbeddedPostgres(base / "pg", port=free_port())
    kafka = EmbeddedKafka(base / "kafka", port=free_port())
    failed = True
    try:
        say(f"{label}: starting a fresh embedded Postgres and broker ...")
        pg.start()
        kafka.start()
        result = asyncio.run(measure(pg, kafka, base))
        failed = False
        return result
    finally:
        kafka.stop()
        pg.stop()
        if failed:  # the services' logs are what tells why: kept, with the data
            say(f"{label} failed; its logs and data are kept in {base} (remove it when done)")
            for log in sorted((base / "logs").glob("*.log")):
                say(f"  {log}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def main(args: argparse.Namespace) -> int:
    folder = Path(args.out)
    stem = "latest" if args.replicas == 1 else f"replicas-{args.replicas}"
    against = Path(args.compare) if args.compare else folder / f"{stem}.previous.json"
    if (folder / f"{stem}.json").exists():  # this run becomes latest; the last, previous
        shutil.copyfile(folder / f"{stem}.json", folder / f"{stem}.previous.json")
    result = on_fresh_infra("Branchline bench",
                            lambda pg, kafka, base: measure(args, pg, kafka, base))
    table = render(result)
    if args.compare is not None or against.exists():
        try:
            table += "\n" + compare(result, json.loads(against.read_text()))
        except (OSError, ValueError, KeyError) as exc:
            table += f"\nNo comparison: {against} could not be read ({exc}).\n"
    write_results(folder, stem, result, table)
    return 0
