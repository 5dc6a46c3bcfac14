"""Prometheus metrics every service exports at /metrics, labelled by service."""

from __future__ import annotations

from functools import cache
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

CONSUMED = Counter(
    "branchline_events_consumed_total", "Events handled by a consumer", ["service", "type"]
)
DUPLICATES = Counter(
    "branchline_events_duplicate_total", "Events skipped by the inbox as already handled",
    ["service", "type"],
)
PUBLISHED = Counter(
    "branchline_events_published_total", "Events published by the outbox relay",
    ["service", "type"],
)
DEAD_LETTERED = Counter(
    "branchline_events_dead_lettered_total", "Records sent to the dead-letter topic",
    ["service", "error_type"],
)
RETRIES = Counter(
    "branchline_consumer_retries_total", "Batches retried after a transient failure", ["service"]
)
HANDLER_SECONDS = Histogram(
    "branchline_handler_seconds", "Time to handle one event inside its batch transaction",
    ["service", "type"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BATCH_SECONDS = Histogram(
    "branchline_batch_seconds", "Time to handle one fetched batch, commit included",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    "branchline_batch_records", "Records per fetched batch", ["service"],
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
)
PARKED = Counter(
    "branchline_records_parked_total",
    "Records parked: never publishable (stage=publish) or neither handled nor dead-lettered "
    "(stage=consume); alert on any increase and inspect with `branchline parked list`",
    ["service", "stage", "error_type"],
)
TABLE_ROWS = Gauge(
    "branchline_table_rows", "Rows in a messaging table (outbox, inbox, parked, ...)",
    ["service", "table"],
)
LATE_TRANSFERS = Gauge(
    "branchline_late_transfers", "Open transfers older than TRANSFER_LATE_DAYS, by destination",
    ["service", "site"],
)
OUTBOX_BACKLOG = Gauge(
    "branchline_outbox_backlog", "Outbox rows not yet published", ["service"]
)
RECORD_AGE = Histogram(
    "branchline_record_age_seconds",
    "Age of a record (now minus its Kafka timestamp) when its batch is handled",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


@cache
def child(metric: Any, *labels: str) -> Any:
    """A metric's labelled child, looked up once (`labels()` takes a lock on every call)."""
    return metric.labels(*labels)
