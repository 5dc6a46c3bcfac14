"""Settings from the environment (pydantic-settings): one place, typed, documented."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
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
    kafka_partitions: int = 4
    # Prepended to every topic name: lets several environments (or test runs) share one
    # cluster. Empty in production, so the names are exactly those of docs/events.md.
    kafka_topic_prefix: str = ""
    db_pool_size: int = 10
    relay_batch: int = 1000
    relay_idle_poll_s: float = 0.5
    signing_key: str | None = Field(default=None, alias="BRANCHLINE_SIGNING_KEY")
    state_dir: Path = Field(default=PROJECT_ROOT / ".branchline", alias="BRANCHLINE_STATE_DIR")
    log_level: str = "INFO"
    host: str = "127.0.0.1"
    port: int | None = None
    processing_site: str = "JX-CENTRAL"

    def topic(self, name: str) -> str:
        return f"{self.kafka_topic_prefix}{name}"

    def db_url_for(self, service: str) -> str:
        return os.environ.get(f"{service.upper()}_DATABASE_URL", self.database_url)

    def port_for(self, service: str) -> int:
        return self.port or DEFAULT_PORTS[service]


def load_settings() -> Settings:
    return Settings()
