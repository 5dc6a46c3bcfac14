"""Settings from the environment (pydantic-settings): one place, typed, documented."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.contracts.registry import SERVICES

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: acquisition 8101, cataloging 8102, circulation 8103, logistics 8104.
DEFAULT_PORTS = {name: 8101 + i for i, name in enumerate(SERVICES)}


class Settings(BaseSettings):
    """What every service reads. Per-service database URLs win over the shared one."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5433/postgres"
    # Local groups rejoin in seconds with short timeouts; a real cluster's minimum is
    # usually 6000 ms (group.min.session.timeout.ms), so `branchline up` sets these only
    # for the embedded broker.
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 3_000
    kafka_fetch_max_wait_ms: int = 100
    kafka_max_records: int = 500
    # How long a consumer waits for records before polling again. FastStream's batch
    # subscriber also sleeps this long after an empty poll, so it bounds the idle delay.
    kafka_batch_wait_ms: int = 20
    # A fetched batch of at least this many records is handled as concurrent transactions,
    # one per partition (shared/messaging/consumer.py `ByPartition`): a backlog drains
    # faster. A smaller one is one transaction: at a steady rate, splitting it multiplies
    # the per-transaction round trips and the latency grew. 0: never split.
    kafka_concurrent_partitions_from: int = Field(default=200, ge=0)
    kafka_partitions: int = 4
    # Prepended to every topic name: lets several environments (or test runs) share one
    # cluster. Empty in production, so the names are exactly those of docs/events.md.
    kafka_topic_prefix: str = ""
    # Replication factor of the topics a service creates at start-up: 1 suits the single
    # embedded broker; production clusters set 3 (KAFKA_REPLICATION_FACTOR=3).
    kafka_replication_factor: int = Field(default=1, ge=1)
    # Largest HTTP request body (bytes) read before 413; routes may have their own
    # (shared/service/app.py BODY_LIMIT_OVERRIDES, e.g. the MARC upload's 20 MiB).
    http_max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    db_pool_size: int = 10
    # false: this process answers HTTP, relays its outbox and runs its jobs, but joins no
    # consumer group, so a desk's call never waits behind a batch of events being handled
    # on the same event loop (one consuming process + N HTTP processes per service).
    consume: bool = True
    # false: this process never publishes its service's outbox (another process's relay
    # does, woken by NOTIFY). For HTTP-only processes beside consuming ones, so the relay
    # leader's publishing never shares an event loop with desks' calls. At least one
    # process of each service must keep RELAY=true.
    relay: bool = True
    # Lowers this process's CPU priority (added to its nice value, 0..19) at start: give the
    # consuming processes 10 beside HTTP-only ones on the same machine, and a desk's call
    # is answered first when the cores are full; the events wait a little instead.
    process_nice: int = Field(default=0, ge=0, le=19)
    relay_batch: int = 1000
    relay_idle_poll_s: float = 0.5
    # Retention (see docs/reliability.md "Retention and replay"): published outbox rows are
    # kept this long so `branchline replay` can refill a broker that lost its data; inbox
    # keys at least as long, so a replayed event is still recognised as a duplicate.
    outbox_retention_days: float = Field(default=7.0, gt=0)
    inbox_retention_days: float = Field(default=14.0, gt=0)
    # Services' own record tables (circulation's anomalies, logistics' scans) are pruned
    # after this long: staff review anomalies well within it; a scan re-sent later than
    # this is treated as new.
    record_retention_days: float = Field(default=90.0, gt=0)
    # How often the leading relay prunes rows past retention and refreshes table sizes.
    prune_interval_s: float = Field(default=300.0, gt=0)
    signing_key: str | None = Field(default=None, alias="BRANCHLINE_SIGNING_KEY")
    state_dir: Path = Field(default=PROJECT_ROOT / ".branchline", alias="BRANCHLINE_STATE_DIR")
    log_level: str = "INFO"
    host: str = "127.0.0.1"
    port: int | None = None
    processing_site: str = "JX-CENTRAL"
    # Cataloging: received copies wait in the cataloging queue until a cataloger completes
    # them (call number, label); `true` completes each at once, for simulations and benches.
    catalog_auto_complete: bool = False
    # Cataloging: where uploaded MARC files wait while their import job runs (the default
    # is under BRANCHLINE_STATE_DIR); replicas share it so any of them can resume a job.
    import_spool_dir: Path | None = None
    # The library's local time zone: opening hours, courier days and route times are in it.
    timezone: str = "Asia/Shanghai"
    # Circulation: days a hold waits on the hold shelf; active holds a reader may have.
    hold_shelf_days: int = Field(default=7, ge=1, le=90)
    holds_per_patron: int = Field(default=50, ge=1)
    # Circulation: the loan policy where no loan policy applies.
    loan_days: int = Field(default=30, ge=1, le=3650)
    loan_renewals: int = Field(default=1, ge=0, le=100)
    loan_max_items: int = Field(default=20, ge=1, le=10000)
    # Circulation: a transfer open longer than this is late (listed, counted, announced).
    transfer_late_days: float = Field(default=3.0, gt=0)
    # Logistics: crates and daily routes (docs/planning.md says how a library sets them).
    crate_capacity: int = Field(default=40, ge=1, le=1000)
    route_target_hours: float = Field(default=48.0, gt=0)
    route_solve_seconds: float = Field(default=20.0, gt=0, le=600)
    route_seed: int = 0
    route_road_factor: float = Field(default=1.3, ge=1.0, le=5.0)
    route_speed_kmh: float = Field(default=40.0, gt=0, le=200)
    route_stability_minutes: float = Field(default=10.0, ge=0)
    # Local time of day the next plan is made on its own ("" turns the schedule off).
    route_plan_at: str = "05:30"
    # A JSON file {"sites": [...], "minutes": [[...]], "km": [[...]]} of road travel times
    # that replaces the straight-line estimate for the sites it lists.
    travel_matrix_file: Path | None = None

    @model_validator(mode="after")
    def _inbox_outlives_outbox(self) -> Settings:
        if self.inbox_retention_days < self.outbox_retention_days:
            raise ValueError(
                "INBOX_RETENTION_DAYS must be at least OUTBOX_RETENTION_DAYS: a replayed "
                "event must still find its key in the inbox to be dropped as a duplicate")
        return self

    def topic(self, name: str) -> str:
        return f"{self.kafka_topic_prefix}{name}"

    def db_url_for(self, service: str) -> str:
        return os.environ.get(f"{service.upper()}_DATABASE_URL", self.database_url)

    def port_for(self, service: str) -> int:
        return self.port or DEFAULT_PORTS[service]


def load_settings() -> Settings:
    return Settings()
