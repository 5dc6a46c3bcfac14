"""The local network as processes: embedded Postgres and broker (unless external), services.

Used by `branchline up`, the bench and the end-to-end tests; never by a deployed service.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from subprocess import Popen
from typing import Any

from devtools.infra import EmbeddedKafka, EmbeddedPostgres, free_port, port_in_use, spawn_bound
from shared.contracts import SERVICES
from shared.messaging import maintenance
from shared.service.auth import signing_key
from shared.service.settings import PROJECT_ROOT, Settings

#: The demo network `branchline up` loads and the tests use.
DEMO_NETWORK = PROJECT_ROOT / "services" / "logistics" / "data" / "demo_network.json"


def say(msg: str) -> None:
    print(msg, flush=True)


def http(method: str, url: str, body: Any = None, token: str | None = None,
          timeout: float = 5.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


class Stack:
    """The local network: embedded Postgres and broker (unless external), four services."""

    def __init__(self, settings: Settings, state_dir: Path, ports: dict[str, int],
                 log_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.extra_env = extra_env or {}
        self.state_dir = state_dir
        self.ports = ports
        self.log_dir = log_dir
        self.pg: EmbeddedPostgres | None = None
        self.kafka: EmbeddedKafka | None = None
        self.procs: dict[str, Popen[bytes]] = {}
        #: Each service process by its name: (service, replica, extra environment), to start
        #: it again the same way.
        self.started: dict[str, tuple[str, str | None, dict[str, str]]] = {}
        self.kafka_bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
        self.database_url = os.environ.get("DATABASE_URL", "")
        self.key = signing_key(settings)

    def start_infrastructure(self, pg_port: int, kafka_port: int) -> None:
        if not self.database_url:
            if port_in_use(pg_port):
                new = free_port()
                say(f"  port {pg_port} is taken; embedded Postgres uses {new} instead")
                pg_port = new
            self.pg = EmbeddedPostgres(self.state_dir / "pg", port=pg_port)
            if not self.pg.traversable():
                # Run as root, postgres runs as `nobody`, which must reach its data folder.
                import hashlib

                tag = hashlib.sha1(str(self.state_dir).encode()).hexdigest()[:8]
                fallback = Path("/tmp") / f"branchline-{tag}" / "pg"
                fallback.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                say(f"  {self.state_dir} is not reachable by the unprivileged user postgres "
                     f"runs as; keeping its data in {fallback} instead")
                self.pg = EmbeddedPostgres(fallback, port=pg_port)
            t = time.monotonic()
            self.pg.start()
            self.database_url = self.pg.url
            say(f"  Postgres   {self.database_url}  (data in {self.pg.data_dir}, "
                 f"{time.monotonic() - t:.1f}s)")
        else:
            say(f"  Postgres   {self.database_url}  (external, from DATABASE_URL)")
        if not self.kafka_bootstrap:
            if port_in_use(kafka_port):
                new = free_port()
                say(f"  port {kafka_port} is taken; embedded broker uses {new} instead")
                kafka_port = new
            self.kafka = EmbeddedKafka(self.state_dir / "kafka", port=kafka_port)
            self.kafka.start()
            self.kafka_bootstrap = self.kafka.bootstrap
            say(f"  Kafka      {self.kafka_bootstrap}  (embedded, in memory)")
        else:
            say(f"  Kafka      {self.kafka_bootstrap}  (external, from KAFKA_BOOTSTRAP_SERVERS)")

    def supervise_broker(self) -> str | None:
        """Restart the embedded broker if it died, then refill it from the outboxes.

        The embedded broker keeps everything in memory, so it comes back empty: the
        contract's topics are created again and every service's outbox rows written
        within the retention window are marked for re-publishing (`maintenance.replay`);
        consumers' inboxes drop what they had already applied. Returns what was done (for
        `branchline up` to print), or None when the broker is running (or external).
        """
        if self.kafka is None or self.kafka.alive():
            return None
        # Order matters: no relay may publish to the new broker before the replay marked
        # the older rows, or one item's events would reach it out of order. So the
        # services stop, the broker starts empty, the outboxes are re-queued, and the
        # services start again (their consumer positions belonged to the lost broker).
        stopped = [name for name, proc in self.procs.items() if proc.poll() is None]
        for name in stopped:
            self.procs[name].terminate()
        for name in stopped:
            self.procs[name].wait()
        self.kafka.start()
        counts = asyncio.run(maintenance.refill_broker(self.settings.model_copy(update={
            "database_url": self.database_url,
            "kafka_bootstrap_servers": self.kafka_bootstrap})))
        for name in list(self.procs):
            if name == "web":
                self.start_web(self.ports["web"])
            else:
                service, replica, env = self.started[name]
                self.start_service(service, replica=replica, env=env)
        return (f"the embedded broker died and was restarted empty on {self.kafka.bootstrap}; "
                "topics created again; services restarted; outbox rows re-queued for "
                "publishing: " + ", ".join(f"{name} {n}" for name, n in counts.items()))

    def service_env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "PORT": str(self.ports[name]),
            "BRANCHLINE_SIGNING_KEY": self.key,
            "PYTHONUNBUFFERED": "1",
        })
        # Tests, benches and simulations run without a cataloger at the queue;
        # `branchline up` turns the queue on (--auto-catalog keeps it off).
        env.setdefault("CATALOG_AUTO_COMPLETE", "true")
        if self.kafka is not None:  # the embedded broker takes short group timeouts
            env.setdefault("KAFKA_SESSION_TIMEOUT_MS", "2000")
            env.setdefault("KAFKA_HEARTBEAT_INTERVAL_MS", "500")
            # It answers a fetch only when the wait ends, not when a record arrives (a
            # record waits up to half of it: p50 25 / max 52 ms at 100, 8 / 19 at 30,
            # measured), so each hop of a chain would add that; shorter waits cost it a
            # little CPU in idle consumers' polls.
            env.setdefault("KAFKA_FETCH_MAX_WAIT_MS", "40")
        env.update(self.extra_env)
        return env

    def start_service(self, name: str, *, replica: str | None = None,
                      env: dict[str, str] | None = None) -> str:
        """Start a process of service `name`; a `replica` is another process of it, known
        as `<name>-<replica>` (its own port and log), with `env` on top of the service's
        (e.g. CONSUME=false for an HTTP-only process). Returns the process's name."""
        key = name if replica is None else f"{name}-{replica}"
        if key not in self.ports:
            self.ports[key] = free_port()
        environment = {**self.service_env(name), "PORT": str(self.ports[key]), **(env or {})}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{key}.log", "ab")
        self.procs[key] = spawn_bound(
            [sys.executable, "-m", "shared.service", name], signal.SIGTERM,
            env=environment, stdout=log, stderr=log, cwd=str(PROJECT_ROOT),
        )
        log.close()
        self.started[key] = (name, replica, dict(env or {}))
        return key

    def start_web(self, port: int) -> None:
        """The staff pages (`python -m web`) on `port`, calling this stack's services."""
        self.ports["web"] = port
        env = self.service_env("web")
        env["WEB_PORT"] = str(port)
        for name in SERVICES:
            env[f"{name.upper()}_URL"] = self.url(name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / "web.log", "ab")
        self.procs["web"] = spawn_bound([sys.executable, "-m", "web"], signal.SIGTERM, env=env,
                                        stdout=log, stderr=log, cwd=str(PROJECT_ROOT))
        log.close()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def wait_healthy(self, timeout: float = 60.0) -> None:
        pending = set(self.procs)
        last: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while pending:
            for name in sorted(pending):
                proc = self.procs[name]
                if proc.poll() is not None:
                    raise SystemExit(
                        f"{name} exited with code {proc.returncode} while starting; "
                        f"last lines of {self.log_dir / (name + '.log')}:\n{self.tail(name)}"
                    )
                try:
                    status, answer = http("GET", self.url(name) + "/health", timeout=2)
                    last[name] = f"{status} {answer}"
                except OSError as exc:
                    status, last[name] = 0, repr(exc)
                if status == 200:
                    pending.discard(name)
                    say(f"  {name:<12} healthy  {self.url(name)}")
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"not healthy after {timeout:.0f}s: {', '.join(sorted(pending))} (last "
                    "/health answers: " + "; ".join(f"{n}: {last.get(n, 'none')}"
                                                     for n in sorted(pending))
                    + f"); see logs in {self.log_dir}")
            time.sleep(0.3)

    def tail(self, name: str, lines: int = 15) -> str:
        path = self.log_dir / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - escalate whatever went wrong
                proc.kill()
                proc.wait()
        if self.kafka is not None:
            self.kafka.stop()
        if self.pg is not None:
            self.pg.stop()
