"""The outbox relay against the real broker and Postgres (circulation's schema is the vehicle).

Parking: a row the producer refuses for good is parked; the rest of its window is published.
Leader: one relay per schema publishes (advisory lock); another takes over when it goes.
Retention: published rows are kept and can be replayed; pruning deletes what is past it.
Parked records can be listed and put back into the outbox (the CLI's functions).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.circulation.spec import SPEC
from shared.contracts import TOPICS
from shared.messaging import maintenance
from shared.messaging.kafka import ensure_topics, make_producer
from shared.messaging.outbox import (
    OutboxRelay,
    RelayBell,
    ServiceContext,
    decode_headers,
    park,
)
from shared.messaging.unit_of_work import SqlUnitOfWork
from shared.service import metrics
from shared.service.settings import Settings
from tests.support import (
    Infra,
    asyncpg_dsn,
    eventually,
    migrated_context,
    new_env,
    produce,
    read_topic,
    running_service,
)

pytestmark = pytest.mark.integration

SCHEMA = "circulation"
MAX_REQUEST = 1_048_576  # aiokafka's default max_request_size


@dataclass
class Node:
    """One 'process' of circulation: its engine, context, producer and relay."""

    engine: AsyncEngine
    ctx: ServiceContext
    producer: AIOKafkaProducer
    relay: OutboxRelay


@asynccontextmanager
async def node(settings: Settings, name: str = "relay") -> AsyncIterator[Node]:
    async with migrated_context(SPEC, settings, pool_size=3) as ctx:
        producer = make_producer(settings, name)
        await producer.start()
        relay = OutboxRelay(ctx, producer, idle_poll_s=0.1,
                            topic_prefix=settings.kafka_topic_prefix)
        try:
            yield Node(ctx.sessionmaker.kw["bind"], ctx, producer, relay)
        finally:
            await relay.stop()
            await producer.stop()


async def queue(ctx: ServiceContext, records: list[tuple[bytes, bytes]],
                topic: str = "circulation.transfers") -> None:
    """Raw records into the outbox in one transaction, in list order (ids ascending)."""
    async with SqlUnitOfWork(ctx) as uow:
        for key, value in records:
            uow.forward(topic=topic, key=key, value=value, event_type="test.record")


async def scalar(ctx: ServiceContext, sql: str) -> object:
    async with ctx.sessionmaker() as session:
        return (await session.execute(text(sql))).scalar_one()


# ------------------------------------------------------------------ parking (item 1)


async def test_a_row_refused_for_good_is_parked_and_the_rest_published(infra: Infra) -> None:
    settings = await new_env(infra)
    async with node(settings) as n:
        big = b"x" * (2 * 1024 * 1024)
        await queue(n.ctx, [(b"K", b"small-1"), (b"K", big), (b"K", b"small-2")])
        big_id = await scalar(n.ctx, "SELECT id FROM circulation.outbox "
                                     "WHERE octet_length(value) > 1000")
        before = metrics.PARKED.labels(SCHEMA, "publish", "too_large")._value.get()

        assert await n.relay.drain_once() == 2
        assert await n.relay.drain_once() == 0  # nothing left to claim: no loop
        records = await read_topic(settings, "circulation.transfers", at_least=2, settle=1.0)
        assert [r.value for r in records] == [b"small-1", b"small-2"]  # in id order

        parked = await maintenance.list_parked(n.ctx)
        assert [(p.stage, p.error_type, p.outbox_id, p.topic, p.size) for p in parked] == [
            ("publish", "too_large", big_id, "circulation.transfers", len(big))]
        assert "MessageSizeTooLargeError" in parked[0].reason
        assert metrics.PARKED.labels(SCHEMA, "publish", "too_large")._value.get() == before + 1
        # the parked row left the outbox; the published ones are kept, marked published
        assert await scalar(n.ctx, "SELECT count(*) FROM circulation.outbox") == 2
        assert await scalar(n.ctx, "SELECT count(*) FROM circulation.outbox_unpublished") == 0
        assert await scalar(n.ctx, f"SELECT count(*) FROM circulation.outbox "
                                   f"WHERE id = {big_id}") == 0


async def test_a_window_the_broker_did_not_acknowledge_stays_unpublished(
        infra: Infra, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window is claimed and marked in one statement; the mark is only kept when every
    row was acknowledged, so a failed send leaves all of it to the next drain, in order."""
    settings = await new_env(infra)
    async with node(settings) as n:
        await queue(n.ctx, [(b"K", b"w-1"), (b"L", b"w-2"), (b"K", b"w-3")])
        real_send_batch = n.producer.send_batch

        async def broker_gone(*_: object, **__: object) -> asyncio.Future[object]:
            failed: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            failed.set_exception(ConnectionError("broker unreachable"))
            return failed

        monkeypatch.setattr(n.producer, "send_batch", broker_gone)
        with pytest.raises(ConnectionError):
            await n.relay.drain_once()
        assert await scalar(n.ctx, "SELECT count(*) FROM circulation.outbox_unpublished") == 3
        monkeypatch.setattr(n.producer, "send_batch", real_send_batch)
        assert await n.relay.drain_once() == 3
        assert await scalar(n.ctx, "SELECT count(*) FROM circulation.outbox_unpublished") == 0
        records = await read_topic(settings, "circulation.transfers", at_least=3, settle=0.5)
        assert [r.value for r in records if r.key == b"K"] == [b"w-1", b"w-3"]
        assert sorted(r.value for r in records) == [b"w-1", b"w-2", b"w-3"]


async def test_relay_running_past_a_refused_row_keeps_publishing(infra: Infra) -> None:
    settings = await new_env(infra)
    async with node(settings) as n:
        n.relay.start()
        await queue(n.ctx, [(b"A", b"a-1"), (b"A", b"y" * (3 * 1024 * 1024))])
        await queue(n.ctx, [(b"A", b"a-2")])  # a later transaction, after the big row
        records = await read_topic(settings, "circulation.transfers", at_least=2, settle=0.5)
        assert [r.value for r in records] == [b"a-1", b"a-2"]
        await eventually(lambda: _true(n.relay.parked == 1), what="the big row parked")
        assert n.relay.published == 2


async def _true(value: bool) -> bool:
    return value


async def test_dead_letter_copy_over_the_limit_is_parked(infra: Infra) -> None:
    """A record that fits, dead-lettered with its reason headers, no longer fits: parked."""
    settings = await new_env(infra)
    headers = [("content-type", b"application/cloudevents+json")]
    fixed = DefaultRecordBatchBuilder.estimate_size_in_bytes(b"BIG", b"", headers)
    value = b"{" + b"x" * (MAX_REQUEST - fixed - 64)  # not JSON; just under the limit
    assert DefaultRecordBatchBuilder.estimate_size_in_bytes(b"BIG", value, headers) \
        < MAX_REQUEST
    async with running_service(SPEC, settings) as client:
        await produce(settings, "branch.events", [(b"BIG", value)], headers=headers)
        await produce(settings, "branch.events", [(b"SMALL", b"{not json")])
        dlq = await read_topic(settings, "dlq.circulation", at_least=1, settle=1.0)
        assert [r.key for r in dlq] == [b"SMALL"]  # published after the refused one
        ctx = client.service.ctx

        async def parked() -> list[maintenance.ParkedRecord]:
            return await maintenance.list_parked(ctx)

        found = await eventually(parked, what="the oversized dead-letter copy parked")
        assert [(p.stage, p.topic, p.error_type, p.size) for p in found] == [
            ("publish", "dlq.circulation", "too_large", len(value))]
        async with ctx.sessionmaker() as session:
            row = (await session.execute(text(
                f"SELECT headers FROM circulation.parked WHERE id = {found[0].id}"))).one()
        kept = dict(decode_headers(row.headers))
        assert kept["error-type"] == b"not_json"
        assert kept["original-topic"] == settings.topic("branch.events").encode()


# ------------------------------------------------------------------ one leader (item 4)


async def test_one_relay_leads_and_another_takes_over(infra: Infra) -> None:
    settings = await new_env(infra)
    async with node(settings, "relay-a") as a, node(settings, "relay-b") as b:
        relays = [a.relay, b.relay]
        a.relay.start()
        b.relay.start()

        async def one_leader() -> OutboxRelay | None:
            leaders = [r for r in relays if r.is_leader]
            assert len(leaders) <= 1, "two relays lead at once"
            return leaders[0] if leaders else None

        seq = 0

        async def burst(n_rows: int) -> None:
            nonlocal seq
            records = []
            for _ in range(n_rows):
                records.append((f"K{seq % 5}".encode(), str(seq).encode()))
                seq += 1
            await queue(a.ctx, records)

        async def all_published() -> bool:
            await one_leader()  # asserts at most one leader each time it looks
            return await scalar(a.ctx, "SELECT count(*) FROM "
                                       "circulation.outbox_unpublished") == 0

        first = await eventually(one_leader, what="a leader")
        follower = b.relay if first is a.relay else a.relay
        await burst(40)
        await eventually(all_published, what="the first burst published")
        assert (first.published, follower.published) == (40, 0)  # only the leader publishes

        # the holder's connection dies: the lock goes with it, and a relay takes over
        conn = await asyncpg.connect(asyncpg_dsn(settings.database_url))
        try:
            assert first.lock_pid is not None
            await conn.execute("SELECT pg_terminate_backend($1)", first.lock_pid)
        finally:
            await conn.close()
        await eventually(lambda: _true(not first.is_leader), what="the leader to step down")
        await burst(40)
        await eventually(all_published, what="the second burst published")
        second = await eventually(one_leader, what="a leader after the cut")

        # the leader stops: the other one takes over and publishes the rest
        other = b.relay if second is a.relay else a.relay
        published_before = other.published
        await second.stop()
        await eventually(lambda: _true(other.is_leader), what="fail-over to the other relay")
        await burst(40)
        await eventually(all_published, what="the third burst published")
        assert other.published == published_before + 40
        assert a.relay.published + b.relay.published == 120

    records = await read_topic(settings, "circulation.transfers", at_least=120, settle=1.0)
    values = [int(r.value) for r in records]
    assert sorted(values) == list(range(120))  # every row once
    for key in {r.key for r in records}:
        ordered = [int(r.value) for r in records if r.key == key]
        assert ordered == sorted(ordered), f"key {key!r} out of order"


async def test_a_commit_in_another_process_wakes_the_leader(infra: Infra) -> None:
    """The leader polls only every 60 s here: rows committed by a process whose relay does
    not lead are published at once only because that process's bell rang it (NOTIFY)."""
    settings = await new_env(infra)
    async with node(settings, "relay-a") as a, node(settings, "relay-b") as b:
        a.relay.idle_poll_s = b.relay.idle_poll_s = 60.0
        a.relay.start()
        await eventually(lambda: _true(a.relay.is_leader), what="relay a to lead")
        await asyncio.sleep(0.5)  # its first, empty drain is over: it waits for a bell now
        assert a.ctx.relay_leads and not b.ctx.relay_leads
        bell = RelayBell(b.ctx)
        bell.start()
        try:
            await queue(b.ctx, [(b"W", b"rung")])  # committed by the process not leading
            await eventually(lambda: _true(a.relay.published == 1), timeout=10.0,
                             what="the leader to publish the other process's row")
            assert bell.rung >= 1
        finally:
            await bell.stop()
    records = await read_topic(settings, "circulation.transfers", at_least=1, settle=0.5)
    assert [r.value for r in records] == [b"rung"]


# ------------------------------------------------------------------ retention (item 9)


async def test_replay_republishes_rows_written_since(infra: Infra) -> None:
    settings = await new_env(infra)
    async with node(settings) as n:
        await queue(n.ctx, [(b"R", b"old"), (b"R", b"r-1"), (b"R", b"r-2")])
        assert await n.relay.drain_once() == 3
        assert await n.relay.drain_once() == 0  # published rows are kept, not claimed again
        async with n.ctx.sessionmaker() as session, session.begin():
            await session.execute(text(
                "UPDATE circulation.outbox SET created_at = now() - interval '2 hours' "
                "WHERE value = 'old'::bytea"))
        since = datetime.now(UTC) - timedelta(hours=1)
        assert await maintenance.replay(n.ctx, since) == 2
        assert await n.relay.drain_once() == 2
        records = await read_topic(settings, "circulation.transfers", at_least=5, settle=1.0)
        assert [r.value for r in records] == [b"old", b"r-1", b"r-2", b"r-1", b"r-2"]


async def test_prune_deletes_only_what_is_past_retention(infra: Infra) -> None:
    settings = await new_env(infra)  # outbox 7 days, inbox 14 days
    async with node(settings) as n:
        await queue(n.ctx, [(b"P", b"old-published"), (b"P", b"new-published"),
                            (b"P", b"old-unpublished")])
        await park(n.ctx, stage="consume", topic="branch.events", error_type="e",
                   reason="retried long ago", value=b"1")
        await park(n.ctx, stage="consume", topic="branch.events", error_type="e",
                   reason="retried yesterday", value=b"2")
        await park(n.ctx, stage="consume", topic="branch.events", error_type="e",
                   reason="never retried", value=b"3")
        async with n.ctx.sessionmaker() as session, session.begin():
            for sql in (
                "UPDATE circulation.outbox SET created_at = now() - interval '8 days' "
                "WHERE value = 'old-published'::bytea",
                "UPDATE circulation.outbox SET created_at = now() - interval '1 day' "
                "WHERE value = 'new-published'::bytea",
                "DELETE FROM circulation.outbox_unpublished WHERE id IN (SELECT id FROM "
                "circulation.outbox WHERE value IN ('old-published', 'new-published'))",
                "UPDATE circulation.outbox SET created_at = now() - interval '30 days' "
                "WHERE value = 'old-unpublished'::bytea",
                "INSERT INTO circulation.inbox (source, id, received_at) VALUES "
                "('s', 'old', now() - interval '15 days'), "
                "('s', 'week', now() - interval '8 days'), ('s', 'new', now())",
                "UPDATE circulation.parked SET retried_at = now() - interval '8 days', "
                "parked_at = now() - interval '9 days' WHERE reason = 'retried long ago'",
                "UPDATE circulation.parked SET retried_at = now() - interval '1 day' "
                "WHERE reason = 'retried yesterday'",
                "UPDATE circulation.parked SET parked_at = now() - interval '60 days' "
                "WHERE reason = 'never retried'",
            ):
                await session.execute(text(sql))

        assert await maintenance.prune(n.ctx) == maintenance.Pruned(outbox=1, inbox=1, parked=1)
        async with n.ctx.sessionmaker() as session:
            outbox = (await session.execute(text(
                "SELECT value FROM circulation.outbox ORDER BY id"))).scalars().all()
            inbox = (await session.execute(text(
                "SELECT id FROM circulation.inbox ORDER BY id"))).scalars().all()
            parked = (await session.execute(text(
                "SELECT reason FROM circulation.parked ORDER BY id"))).scalars().all()
        assert outbox == [b"new-published", b"old-unpublished"]
        assert inbox == ["new", "week"]
        assert parked == ["retried yesterday", "never retried"]

        def rows(table: str) -> float:
            return float(metrics.TABLE_ROWS.labels(SCHEMA, table)._value.get())

        assert (rows("outbox_unpublished"), rows("outbox_retained"), rows("inbox"),
                rows("parked")) == (1, 1, 2, 2)
        assert metrics.OUTBOX_BACKLOG.labels(SCHEMA)._value.get() == 1


def test_inbox_retention_must_cover_outbox_retention() -> None:
    with pytest.raises(ValidationError, match="INBOX_RETENTION_DAYS"):
        Settings(outbox_retention_days=7, inbox_retention_days=3)
    assert Settings(outbox_retention_days=2, inbox_retention_days=2).inbox_retention_days == 2


# ------------------------------------------------------------------ parked records (CLI)


async def test_parked_records_listed_and_retried(infra: Infra, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    settings = await new_env(infra)
    async with node(settings) as n:
        await park(n.ctx, stage="consume", topic=settings.topic("branch.events"),
                   error_type="db_refused", reason="NUL in a header", partition=2, offset=41,
                   key=b"B1", value=b'{"id": "1"}', headers=[("h", b"a\x00b")],
                   event_type="branch.checkin")
        [rec] = await maintenance.list_parked(n.ctx)
        assert (rec.stage, rec.topic, rec.partition, rec.offset, rec.retried_at) == (
            "consume", settings.topic("branch.events"), 2, 41, None)

        # the CLI is a thin wrapper over the same functions, on the service's database
        from devtools import cli

        monkeypatch.setenv("DATABASE_URL", settings.database_url)
        monkeypatch.setenv("KAFKA_TOPIC_PREFIX", settings.kafka_topic_prefix)
        assert await asyncio.to_thread(cli.main, ["parked", "list", "--service", SCHEMA]) == 0
        table = capsys.readouterr().out
        assert "db_refused" in table and "NUL in a header" in table and str(rec.id) in table
        assert await asyncio.to_thread(
            cli.main, ["parked", "retry", str(rec.id), "--service", SCHEMA]) == 0
        assert f"parked record {rec.id}" in capsys.readouterr().out
        with pytest.raises(maintenance.ParkedRetryError, match="already retried"):
            await maintenance.retry_parked(n.ctx, rec.id)
        with pytest.raises(maintenance.ParkedRetryError, match="no parked record"):
            await maintenance.retry_parked(n.ctx, 999_999)
        [rec] = await maintenance.list_parked(n.ctx)
        assert rec.retried_at is not None

        assert await n.relay.drain_once() == 1  # back to its original topic, unprefixed
        [record] = await read_topic(settings, "branch.events", at_least=1)
        assert (record.key, record.value) == (b"B1", b'{"id": "1"}')
        assert dict(record.headers)["h"] == b"a\x00b"

        assert await asyncio.to_thread(
            cli.main, ["replay", "--since", "2000-01-01T00:00:00+00:00",
                       "--service", SCHEMA]) == 0
        assert "1 rows" in capsys.readouterr().out
        assert await n.relay.drain_once() == 1


# ------------------------------------------------------------------ local stack (item 9)


async def test_local_stack_restarts_a_dead_broker_and_replays(infra: Infra,
                                                               tmp_path: Path) -> None:
    """The embedded broker dies: the stack restarts it on its port, empty, and replays."""
    import os
    import signal

    from devtools.infra import EmbeddedKafka, free_port
    from devtools.stack import Stack

    broker = EmbeddedKafka(tmp_path / "kafka", port=free_port())
    await asyncio.to_thread(broker.start)
    try:
        settings = (await new_env(infra)).model_copy(
            update={"kafka_bootstrap_servers": broker.bootstrap})
        stack = Stack(settings, tmp_path, {}, tmp_path / "logs")
        stack.kafka, stack.kafka_bootstrap = broker, broker.bootstrap
        stack.database_url = settings.database_url
        assert await asyncio.to_thread(stack.supervise_broker) is None  # alive: nothing
        async with node(settings) as n:
            await ensure_topics(broker.bootstrap,  # the topics, on this private broker
                                [settings.topic(t) for t in TOPICS])
            await queue(n.ctx, [(b"S", b"s-1"), (b"S", b"s-2")])
            assert await n.relay.drain_once() == 2

            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGKILL)
            await eventually(lambda: _true(not broker.alive()), what="the broker to die")
            said = await asyncio.to_thread(stack.supervise_broker)
            assert said is not None and "circulation 2" in said
            assert broker.alive()
            n.relay.start()
            records = await read_topic(settings, "circulation.transfers", at_least=2,
                                       settle=0.5)
            assert [r.value for r in records] == [b"s-1", b"s-2"]  # refilled from Postgres
    finally:
        await asyncio.to_thread(broker.stop)
