"""Keeping the messaging tables: retention pruning, table sizes, replay, parked records.

The leading outbox relay of each service runs `prune` every `prune_interval_s`; the
`branchline` command (devtools/cli.py) is a thin wrapper around `replay`, `list_parked`
and `retry_parked`, one service database at a time (`open_context`).

- Published outbox rows are kept `outbox_retention_days`, then deleted.
- Inbox keys are kept `inbox_retention_days` (at least the outbox retention: a replayed
  event must still find its key in the consumer's inbox to be dropped as a duplicate).
- Parked records are kept until retried, then `outbox_retention_days` more.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from shared.contracts import SERVICES, TOPICS
from shared.messaging.kafka import ensure_topics
from shared.messaging.outbox import (  # prune runs in the relay; here for the CLI too
    Pruned,
    ServiceContext,
    outbox_tables,
    prune,
    refresh_table_rows,
)
from shared.service.db import make_engine, make_sessionmaker
from shared.service.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["ParkedRecord", "ParkedRetryError", "Pruned", "list_parked", "open_context",
           "prune", "refresh_table_rows", "replay", "retry_parked"]

async def replay(ctx: ServiceContext, since: datetime) -> int:
    """Mark every outbox row written at or after `since` unpublished again.

    The leading relay then re-publishes them in id order, before anything newer; consumers'
    inboxes drop the ones they already applied. A row is published after it is written, so
    choose `since` at or before the broker's restore point, less the relay's lag then (a
    replay from earlier only sends more that consumers drop). Returns how many rows were
    marked (those still unpublished are left as they are).
    """
    if since.tzinfo is None:
        raise ValueError("since must carry a time zone")
    s = ctx.tables.schema
    async with ctx.sessionmaker() as session, session.begin():
        result: Any = await session.execute(
            text(f'INSERT INTO "{s}".outbox_unpublished (id) SELECT id FROM "{s}".outbox '
                 "WHERE created_at >= :since ORDER BY id ON CONFLICT DO NOTHING"),
            {"since": since},
        )
        count = int(result.rowcount or 0)
    ctx.wake_relay.set()
    log.info("outbox replay", extra={"service": ctx.service, "since": since.isoformat(),
                                     "rows": count})
    return count


@dataclass(frozen=True)
class ParkedRecord:
    """One parked record as `branchline parked list` shows it."""

    id: int
    stage: str
    topic: str
    partition: int | None
    offset: int | None
    error_type: str
    reason: str
    event_type: str | None
    outbox_id: int | None
    size: int
    parked_at: datetime
    retried_at: datetime | None


async def list_parked(ctx: ServiceContext, include_retried: bool = True) -> list[ParkedRecord]:
    """The service's parked records, oldest first (values are not loaded, only sized)."""
    s = ctx.tables.schema
    where = "" if include_retried else "WHERE retried_at IS NULL"
    async with ctx.sessionmaker() as session:
        rows = (await session.execute(text(
            f'SELECT id, stage, topic, "partition", "offset", error_type, reason, event_type, '
            f"outbox_id, coalesce(octet_length(value), 0) AS size, parked_at, retried_at "
            f'FROM "{s}".parked {where} ORDER BY id'))).all()
    return [ParkedRecord(id=r.id, stage=r.stage, topic=r.topic, partition=r.partition,
                         offset=r.offset, error_type=r.error_type, reason=r.reason,
                         event_type=r.event_type, outbox_id=r.outbox_id, size=int(r.size),
                         parked_at=r.parked_at, retried_at=r.retried_at) for r in rows]


class ParkedRetryError(ValueError):
    """A parked record that cannot be retried (unknown id, or already retried)."""


async def retry_parked(ctx: ServiceContext, parked_id: int) -> int:
    """Put a parked record back into the outbox, to its original topic; return the new row id.

    Both stages go the same way: a new unpublished outbox row (the relay publishes it after
    everything already queued) and `retried_at` set, in one transaction. A `consume`
    record thus comes back on its topic for every consumer of that topic (inboxes drop it
    where it was already applied). Retry once the cause is gone (e.g. the size limit was
    raised): a record refused again is parked again, as a new parked row.
    """
    s = ctx.tables.schema
    async with ctx.sessionmaker() as session, session.begin():
        row = (await session.execute(text(
            f'SELECT id, stage, topic, key, value, headers, event_type, error_type, retried_at '
            f'FROM "{s}".parked WHERE id = :id FOR UPDATE'), {"id": parked_id})).one_or_none()
        if row is None:
            raise ParkedRetryError(f"no parked record {parked_id} in {ctx.service}")
        if row.retried_at is not None:
            raise ParkedRetryError(f"parked record {parked_id} was already retried at "
                                   f"{row.retried_at.isoformat()}")
        topic = str(row.topic)
        prefix = ctx.settings.kafka_topic_prefix
        if prefix and topic.startswith(prefix):  # a consumed record's topic is prefixed
            topic = topic[len(prefix):]
        outbox_id = (await session.execute(
            text(f'WITH o AS (INSERT INTO "{s}".outbox (topic, key, value, headers, event_type) '
                 "VALUES (:topic, :key, :value, CAST(:headers AS jsonb), :event_type) "
                 f'RETURNING id) INSERT INTO "{s}".outbox_unpublished (id) SELECT id FROM o '
                 "RETURNING id"),
            {"topic": topic, "key": row.key, "value": row.value,
             "headers": _json(row.headers),
             "event_type": row.event_type or f"parked:{row.error_type}"},
        )).scalar_one()
        await session.execute(
            text(f'UPDATE "{s}".parked SET retried_at = now() WHERE id = :id'),
            {"id": parked_id})
    ctx.wake_relay.set()
    log.info("parked record retried", extra={"service": ctx.service, "parked_id": parked_id,
                                             "outbox_id": outbox_id})
    return int(outbox_id)


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@asynccontextmanager
async def open_context(service: str, settings: Settings) -> AsyncIterator[ServiceContext]:
    """A context on one service's database (`db_url_for(service)`, schema = its name)."""
    engine = make_engine(settings.db_url_for(service), 2)
    try:
        yield ServiceContext(service, outbox_tables(service), make_sessionmaker(engine),
                             settings=settings)
    finally:
        await engine.dispose()


async def refill_broker(settings: Settings) -> dict[str, int | str]:
    """Bring a broker that came back empty up to date: create the contract's topics, then
    re-queue every service's outbox rows published within the retention window.

    Run it before the services publish again (they are stopped), so each key's events
    reach the new broker in their original order. Returns the rows re-queued per service
    (or why a service's could not be).
    """
    await ensure_topics(settings.kafka_bootstrap_servers,
                        [settings.topic(t) for t in TOPICS],
                        partitions=settings.kafka_partitions,
                        replication_factor=settings.kafka_replication_factor)
    since = datetime.now(UTC) - timedelta(days=settings.outbox_retention_days)
    counts: dict[str, int | str] = {}
    for name in SERVICES:
        try:
            async with open_context(name, settings) as ctx:
                counts[name] = await replay(ctx, since)
        except Exception as exc:  # noqa: BLE001 - reported; the other services go on
            counts[name] = f"failed ({type(exc).__name__}: {exc})"
    return counts
