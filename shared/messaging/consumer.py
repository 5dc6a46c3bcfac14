"""Consumers: each fetched batch handled in one transaction, offsets committed after it.

The batch path is the fast path (group commit: one transaction per fetch). When a batch
fails for a reason that is not transient, the batch is retried record by record so one
poison record is dead-lettered and the rest still commit. Transient failures (database
down, connection lost, serialization conflict) are retried with backoff and the offsets
are never committed past them.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Container, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, get_type_hints

from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from shared.contracts import (
    EVENTS,
    Envelope,
    Event,
    InvalidEvent,
    check_subject,
    decode_json,
    parse_obj,
)
from shared.messaging.outbox import ServiceContext, park
from shared.messaging.unit_of_work import SqlUnitOfWork
from shared.service import logs, metrics
from shared.service.settings import Settings

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)
#: An event handler: applies one event inside the batch's unit of work.
Handler = Callable[[SqlUnitOfWork, Envelope, E], Awaitable[None]]
#: Loads, in a few queries, the rows a whole batch of events will touch.
Prefetch = Callable[[SqlUnitOfWork, Sequence[tuple[Envelope, Event]]], Awaitable[None]]
H = TypeVar("H", bound=Callable[..., Awaitable[None]])


class Handlers:
    """A service's event handlers, registered by payload class: `@handlers.on(BranchCheckin)`.

    The topics a service consumes follow from what it handles.
    """

    def __init__(self) -> None:
        self.by_type: dict[str, Handler[Any]] = {}
        self.prefetch: Prefetch | None = None

    def on(self, cls: type[E]) -> Callable[[H], H]:
        def register(fn: H) -> H:
            if cls.event_type in self.by_type:
                raise ValueError(f"two handlers for {cls.event_type}")
            data_type = list(get_type_hints(fn).values())[2]
            if data_type is not cls:
                raise TypeError(f"{fn.__name__} handles {cls.__name__} but its data "
                                f"parameter is typed {data_type!r}")
            self.by_type[cls.event_type] = fn
            return fn

        return register

    def before_batch(self, fn: Prefetch) -> Prefetch:
        """Register the batch prefetch, run once per batch before the handlers."""
        self.prefetch = fn
        return fn

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(sorted({EVENTS[t].topic for t in self.by_type}))

    def __contains__(self, event_type: object) -> bool:
        return event_type in self.by_type

    def __getitem__(self, event_type: str) -> Handler[Any]:
        return self.by_type[event_type]

# SQLSTATE classes that mean "try again later": connection exceptions, transaction
# rollback (serialization, deadlock), insufficient resources, operator intervention.
_TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57")


def _is_unique_violation(exc: BaseException) -> bool:
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            return False
        if getattr(current, "sqlstate", None) == "23505" or \
                getattr(current, "pgcode", None) == "23505":
            return True
        current = current.__cause__ or current.__context__ or getattr(current, "orig", None)
    return False


def is_transient(exc: BaseException) -> bool:
    """True when the same work may succeed later, so the offset must not move past it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError | ConnectionError | TimeoutError | PoolTimeout):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        sqlstate = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES:
            return True
        name = type(current).__name__
        if name in {"InterfaceError", "ConnectionDoesNotExistError", "CannotConnectNowError",
                    "InternalClientError", "ConnectionFailureError"}:
            return True
        current = current.__cause__ or current.__context__ or getattr(current, "orig", None)
    return False


@dataclass
class Incoming:
    """One record as fetched, with its parsed event or the reason it can't be handled."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]
    envelope: Envelope | None = None
    payload: Event | None = None
    error: InvalidEvent | None = None

    @classmethod
    def from_record(cls, record: ConsumerRecord[Any, Any],
                    handled: Container[str] | None = None,
                    ingress: Collection[str] = (), prefix: str = "") -> Incoming:
        """Parse a record; never raises: what can't be handled carries the reason why.

        Tolerant reader: a service validates (and dead-letters) only what it handles or
        cannot recognise at all, and skips other services' events cheaply. Every record is
        bound to its topic: a registered type arriving on another topic (an internal event
        forged on the ingress topic) is `wrong_topic`. On an ingress topic (written by
        systems outside Branchline) nothing is skipped: a type no service handles yet is
        `unhandled_type`, and the subject must be the item's barcode (`wrong_subject`).
        """
        item = cls(record.topic, record.partition, record.offset, record.key, record.value,
                   list(record.headers or ()))
        try:
            item._parse(handled, record.topic in ingress, record.topic.removeprefix(prefix))
        except InvalidEvent as exc:
            item.error = exc
        except RecursionError:
            item.error = InvalidEvent("value: JSON nested too deeply", "not_json")
        except Exception as exc:  # noqa: BLE001 - a record must never stop the batch
            item.error = InvalidEvent(f"value: unreadable ({type(exc).__name__}: {exc})",
                                      "unreadable")
        return item

    def _parse(self, handled: Container[str] | None, on_ingress: bool, topic: str) -> None:
        obj = decode_json(self.value)
        event_type = obj.get("type")
        if not isinstance(event_type, str):
            raise InvalidEvent("type: a string is required", "invalid_envelope", ["type"])
        registered = EVENTS.get(event_type)
        if registered is not None and registered.topic != topic:
            raise InvalidEvent(f"type: {event_type!r} belongs on {registered.topic!r}, "
                               f"not {topic!r}", "wrong_topic", ["type"])
        if handled is not None and registered is not None and event_type not in handled:
            if on_ingress:
                raise InvalidEvent(f"type: no service handles {event_type!r} yet",
                                   "unhandled_type", ["type"])
            return
        self.envelope, self.payload = parse_obj(obj)
        if on_ingress:
            check_subject(self.envelope, self.payload)

    @property
    def dead_letter_key(self) -> tuple[str, str]:
        """The inbox key that makes a redelivered poison record dead-lettered only once.

        Its place (topic, partition, offset) and a digest of its value: a broker restarted
        empty hands out the same offsets again, and a new poison record there is not the
        one already dead-lettered.
        """
        digest = hashlib.sha256(self.value or b"").hexdigest()[:16]
        return (f"dlq:{self.topic}:{self.partition}", f"{self.offset}:{digest}")


def _storable(text: str) -> str:
    """Text Postgres can keep: no NUL, no lone surrogate (both come from a record's data)."""
    return text.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")


class EventProcessor:
    """Applies incoming events through a service's handlers, exactly once per (source, id)."""

    #: A unique violation (two replicas inserting one new row) is retried this many times:
    #: once the other transaction committed, the retry finds the row.
    UNIQUE_RETRIES = 3

    def __init__(self, ctx: ServiceContext, handlers: Handlers) -> None:
        self.ctx = ctx
        self.handlers = handlers
        self._unique_failures = 0

    async def process(self, items: Sequence[Incoming]) -> None:
        """Handle a batch; raise only for transient failures (the caller retries)."""
        started = time.perf_counter()
        try:
            async with SqlUnitOfWork(self.ctx) as uow:
                await self._apply(uow, items)
            self._unique_failures = 0
        except Exception as exc:
            if is_transient(exc):
                raise
            if _is_unique_violation(exc) and self._unique_failures < self.UNIQUE_RETRIES:
                self._unique_failures += 1
                raise
            self._unique_failures = 0
            log.warning("batch failed; isolating records one by one",
                        extra={"error": repr(exc), "records": len(items)})
            for item in items:
                await self._process_one(item)
        metrics.BATCH_SECONDS.labels(self.ctx.service).observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.labels(self.ctx.service).observe(len(items))

    async def _process_one(self, item: Incoming) -> None:
        try:
            async with SqlUnitOfWork(self.ctx) as uow:
                await self._apply(uow, [item])
        except Exception as exc:
            if is_transient(exc):
                raise
            if item.error is not None:  # poison whose dead letter failed in the batch
                error, error_type = item.error.reason, item.error.error_type
            else:
                log.exception("handler failed; dead-lettering the record")
                error, error_type = f"{type(exc).__name__}: {exc}", "handler_error"
            await self._dead_letter_alone(item, error, error_type)

    async def _dead_letter_alone(self, item: Incoming, error: str, error_type: str) -> None:
        """Dead-letter one record in its own transaction; park it if even that fails."""
        try:
            async with SqlUnitOfWork(self.ctx) as uow:
                if await uow.claim_inbox([item.dead_letter_key]):
                    uow.dead_letter(
                        topic=item.topic, partition=item.partition, offset=item.offset,
                        key=item.key, value=item.value, headers=item.headers,
                        error=error, error_type=error_type,
                    )
        except Exception as exc:
            if is_transient(exc):
                raise
            reason = _storable(f"{error} (and the dead letter failed: "
                               f"{type(exc).__name__}: {exc})")
            try:
                await park(self.ctx, stage="consume", topic=item.topic,
                           partition=item.partition, offset=item.offset, key=item.key,
                           value=item.value, headers=item.headers, error_type=error_type,
                           reason=reason)
            except Exception as park_exc:
                if is_transient(park_exc):
                    raise
                # Nowhere left to keep it: log the record whole rather than wedge the stream
                # on a failure no retry will change.
                log.critical(
                    "record could be neither dead-lettered nor parked; skipped",
                    extra={"topic": item.topic, "partition": item.partition,
                           "offset": item.offset, "error_type": error_type, "reason": reason,
                           "park_error": repr(park_exc),
                           "key_b64": base64.b64encode(item.key or b"").decode(),
                           "value_b64": base64.b64encode(item.value or b"").decode()},
                )

    async def _apply(self, uow: SqlUnitOfWork, items: Sequence[Incoming]) -> None:
        wanted: list[Incoming] = []
        poison = [item for item in items if item.error is not None]
        fresh_poison = await uow.claim_inbox([item.dead_letter_key for item in poison])
        for item in poison:
            if item.error is not None and item.dead_letter_key in fresh_poison:
                uow.dead_letter(
                    topic=item.topic, partition=item.partition, offset=item.offset,
                    key=item.key, value=item.value, headers=item.headers,
                    error=item.error.reason, error_type=item.error.error_type,
                )
        for item in items:
            if item.error is None and item.envelope is not None \
                    and item.envelope.type in self.handlers:
                wanted.append(item)
        if not wanted:
            return
        fresh = await uow.claim_inbox([i.envelope.key for i in wanted if i.envelope])
        todo: list[tuple[Envelope, Event]] = []
        for item in wanted:
            env = item.envelope
            assert env is not None and item.payload is not None
            if env.key in fresh:
                fresh.discard(env.key)  # a second copy inside the same batch is a duplicate
                todo.append((env, item.payload))
            else:
                metrics.child(metrics.DUPLICATES, self.ctx.service, env.type).inc()
        if self.handlers.prefetch and todo:
            await self.handlers.prefetch(uow, todo)
        for env, payload in todo:
            await self.apply_event(uow, env, payload)

    async def apply_event(self, uow: SqlUnitOfWork, env: Envelope, payload: Event) -> None:
        token_c = logs.correlation_id.set(env.correlationid or env.id)
        token_e = logs.event_id.set(env.id)
        started = time.perf_counter()
        try:
            await self.handlers[env.type](uow, env, payload)
        finally:
            logs.correlation_id.reset(token_c)
            logs.event_id.reset(token_e)
        metrics.child(metrics.HANDLER_SECONDS, self.ctx.service, env.type).observe(
            time.perf_counter() - started
        )
        metrics.child(metrics.CONSUMED, self.ctx.service, env.type).inc()


class ByPartition:
    """A fetched batch of at least `split_from` records (0: never) handled as one
    transaction per partition, the transactions at once; a smaller one in one transaction.

    A partition's records keep their order. Records are grouped by partition *number*
    across topics, as the range assignor hands partitions to replicas: a key published to
    two topics lands on the same number of both (same key, same partition count), so its
    events stay in one transaction, in fetch order. While one partition's transaction
    waits on Postgres, another's handlers run: one process overlaps its round trips the
    way replicas would. A failure of any of them fails the batch (rewound and fetched
    again); what the others committed is dropped by the inbox then. Only a large batch
    is split: at a steady rate the split multiplied each batch's round trips and the
    latency grew (docs/reliability.md#batch-consumer).
    """

    def __init__(self, ctx: ServiceContext, handlers: Handlers, split_from: int) -> None:
        self.ctx, self.handlers, self.split_from = ctx, handlers, split_from
        self.processors: dict[int, EventProcessor] = {}

    def processor(self, partition: int) -> EventProcessor:
        found = self.processors.get(partition)
        if found is None:
            found = self.processors[partition] = EventProcessor(self.ctx, self.handlers)
        return found

    async def process(self, items: Sequence[Incoming]) -> None:
        if not items:
            return
        if not self.split_from or len(items) < self.split_from:
            await self.processor(items[0].partition).process(items)
            return
        groups: dict[int, list[Incoming]] = {}
        for item in items:
            groups.setdefault(item.partition, []).append(item)
        results = await asyncio.gather(
            *(self.processor(p).process(group) for p, group in groups.items()),
            return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result


async def _keep_raw_parser(records: tuple[ConsumerRecord[Any, Any], ...], original: Any) -> Any:
    # FastStream decodes header values as UTF-8 to build its message; a record with binary
    # headers must still reach the dead-letter topic intact, so it parses header-less
    # copies and the handler gets the untouched records. Of the batch it is given only the
    # first and the last record: the handler reads neither FastStream's body (a list of
    # every value) nor its headers, while its message id (first and last offsets) and its
    # path stay what they were. A batch of 500 then costs it two records, not 500.
    ends = (records[0], records[-1]) if len(records) > 1 else records
    stripped = tuple(dataclasses.replace(r, headers=()) for r in ends)
    message = await original(stripped)
    message.raw_message = records
    return message


async def _no_decode(message: Any, original: Any) -> Any:
    return message.raw_message


def subscribe(
    broker: KafkaBroker,
    ctx: ServiceContext,
    handlers: Handlers,
    topics: Sequence[str],
    settings: Settings,
    group_id: str | None = None,
    ingress: Collection[str] = (),
) -> Any:
    """Attach the service's batch consumer: one group, all its topics, manual commit.

    `ingress`: the (prefixed) topics on which an unhandled known type is dead-lettered.
    """
    service = ctx.service
    state = {"failures": 0}
    by_partition = ByPartition(ctx, handlers, settings.kafka_concurrent_partitions_from)
    ingress = frozenset(ingress)
    prefix = settings.kafka_topic_prefix

    @broker.subscriber(
        *topics,
        group_id=group_id or settings.topic(service),
        batch=True,
        max_records=settings.kafka_max_records,
        batch_timeout_ms=settings.kafka_batch_wait_ms,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        ack_policy=AckPolicy.MANUAL,
        parser=_keep_raw_parser,
        decoder=_no_decode,
    )
    async def on_batch(records: Any, message: KafkaMessage) -> None:
        handled = handlers
        try:
            records = message.raw_message
            now_ms = time.time() * 1000
            age = metrics.RECORD_AGE.labels(service)
            for r in records:
                if r.timestamp and r.timestamp > 0:
                    age.observe(max(0.0, (now_ms - r.timestamp) / 1000))
            items = [Incoming.from_record(r, handled, ingress, prefix) for r in records]
            await by_partition.process(items)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - transient: rewind and retry, never commit
            state["failures"] += 1
            delay = min(0.2 * 2 ** (state["failures"] - 1), 5.0)
            metrics.RETRIES.labels(service).inc()
            log.warning("batch failed transiently; will retry",
                        extra={"error": repr(exc), "retry_in_s": delay,
                               "attempt": state["failures"]})
            await asyncio.sleep(delay)
            await message.nack()
            return
        state["failures"] = 0
        try:
            await message.ack()
        except Exception as exc:  # noqa: BLE001 - a lost commit only means a redelivery
            log.warning("offset commit failed; records will be redelivered and de-duplicated",
                        extra={"error": repr(exc)})

    return on_batch
