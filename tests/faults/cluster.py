"""A whole network for fault tests: its own embedded Postgres and broker (so they can be
stopped, frozen and restarted), four services, two replicas of circulation and logistics.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

import httpx

from devtools.infra import EmbeddedKafka, EmbeddedPostgres, free_port, spawn_bound
from shared.contracts import SERVICES
from shared.service.settings import PROJECT_ROOT, Settings
from tests.support import SIGNING_KEY

#: Replicas per service: the two services on the check-in path run twice.
REPLICAS = {"acquisition": 1, "cataloging": 1, "circulation": 2, "logistics": 2}


@dataclass
class Cluster:
    base: Path
    pg: EmbeddedPostgres
    kafka: EmbeddedKafka
    prefix: str
    procs: dict[str, Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return Settings(kafka_bootstrap_servers=self.kafka.bootstrap, database_url=self.pg.url,
                        kafka_topic_prefix=self.prefix, BRANCHLINE_SIGNING_KEY=SIGNING_KEY)

    @staticmethod
    def names() -> list[str]:
        return [f"{s}-{i}" for s in SERVICES for i in range(1, REPLICAS[s] + 1)]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self, name: str) -> None:
        service = name.rsplit("-", 1)[0]
        self.ports.setdefault(name, free_port())
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": self.pg.url, "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap,
            "KAFKA_TOPIC_PREFIX": self.prefix, "PORT": str(self.ports[name]),
            "BRANCHLINE_SIGNING_KEY": SIGNING_KEY, "PYTHONUNBUFFERED": "1",
            "KAFKA_SESSION_TIMEOUT_MS": "2000", "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
            "ROUTE_PLAN_AT": "",
            "LOG_LEVEL": "WARNING",
            "CATALOG_AUTO_COMPLETE": "true",
        })
        log = open(self.base / f"{name}.log", "ab")
        self.procs[name] = spawn_bound([sys.executable, "-m", "shared.service", service],
                                       signal.SIGTERM, env=env, stdout=log, stderr=log,
                                       cwd=str(PROJECT_ROOT))
        log.close()

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def wait_healthy(self, names: list[str] | None = None, timeout: float = 90) -> None:
        pending = set(names or self.procs)
        deadline = time.monotonic() + timeout
        while pending:
            for name in sorted(pending):
                if self.procs[name].poll() is not None:
                    raise RuntimeError(f"{name} exited: {self.tail(name)}")
                try:
                    if httpx.get(self.url(name) + "/health", timeout=2).status_code == 200:
                        pending.discard(name)
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"not healthy: {pending}: "
                                   + " | ".join(self.tail(n) for n in pending))
            time.sleep(0.3)

    def tail(self, name: str, lines: int = 20) -> str:
        try:
            text = (self.base / f"{name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except Exception:  # noqa: BLE001 - escalate whatever went wrong
                proc.kill()
                proc.wait()
