"""The `branchline` command: run the whole network locally, issue tokens, load a network.

    branchline up                 infrastructure, migrations, demo network, all services
    branchline token --role R     a bearer token for the local signing key
    branchline network load FILE  publish a network file's sites through logistics
    branchline bench              the throughput/latency benchmark (see bench/)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from subprocess import Popen
from typing import Any

from shared.auth import ROLES, issue_token, signing_key
from shared.infra import port_in_use
from shared.settings import DEFAULT_PORTS, PROJECT_ROOT, Settings, load_settings

SERVICES = ("acquisition", "cataloging", "circulation", "logistics")
DEMO_NETWORK = PROJECT_ROOT / "services" / "logistics" / "data" / "demo_network.json"
DEMO_SITE = "JX-HN-01"


def _say(msg: str) -> None:
    print(msg, flush=True)


def _http(method: str, url: str, body: Any = None, token: str | None = None,
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
        self.pg: Any = None
        self.kafka: Any = None
        self.procs: dict[str, Popen[bytes]] = {}
        self.kafka_bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
        self.database_url = os.environ.get("DATABASE_URL", "")
        self.key = signing_key(settings)

    def start_infrastructure(self, pg_port: int, kafka_port: int) -> None:
        from shared.infra import EmbeddedKafka, EmbeddedPostgres, free_port

        if not self.database_url:
            if port_in_use(pg_port):
                new = free_port()
                _say(f"  port {pg_port} is taken; embedded Postgres uses {new} instead")
                pg_port = new
            self.pg = EmbeddedPostgres(self.state_dir / "pg", port=pg_port)
            if not self.pg.traversable():
                # Run as root, postgres runs as `nobody`, which must reach its data folder.
                import hashlib

                tag = hashlib.sha1(str(self.state_dir).encode()).hexdigest()[:8]
                fallback = Path("/tmp") / f"branchline-{tag}" / "pg"
                fallback.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                _say(f"  {self.state_dir} is not reachable by the unprivileged user postgres "
                     f"runs as; keeping its data in {fallback} instead")
                self.pg = EmbeddedPostgres(fallback, port=pg_port)
            t = time.monotonic()
            self.pg.start()
            self.database_url = self.pg.url
            _say(f"  Postgres   {self.database_url}  (data in {self.pg.data_dir}, "
                 f"{time.monotonic() - t:.1f}s)")
        else:
            _say(f"  Postgres   {self.database_url}  (external, from DATABASE_URL)")
        if not self.kafka_bootstrap:
            if port_in_use(kafka_port):
                new = free_port()
                _say(f"  port {kafka_port} is taken; embedded broker uses {new} instead")
                kafka_port = new
            self.kafka = EmbeddedKafka(self.state_dir / "kafka", port=kafka_port)
            self.kafka.start()
            self.kafka_bootstrap = self.kafka.bootstrap
            _say(f"  Kafka      {self.kafka_bootstrap}  (embedded, in memory)")
        else:
            _say(f"  Kafka      {self.kafka_bootstrap}  (external, from KAFKA_BOOTSTRAP_SERVERS)")

    def service_env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "PORT": str(self.ports[name]),
            "BRANCHLINE_SIGNING_KEY": self.key,
            "PYTHONUNBUFFERED": "1",
        })
        if self.kafka is not None:  # the embedded broker takes short group timeouts
            env.setdefault("KAFKA_SESSION_TIMEOUT_MS", "2000")
            env.setdefault("KAFKA_HEARTBEAT_INTERVAL_MS", "500")
        env.update(self.extra_env)
        return env

    def start_service(self, name: str) -> None:
        from shared.infra import spawn_bound

        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")
        self.procs[name] = spawn_bound(
            [sys.executable, "-m", f"services.{name}"], signal.SIGTERM,
            env=self.service_env(name), stdout=log, stderr=log, cwd=str(PROJECT_ROOT),
        )
        log.close()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def wait_healthy(self, timeout: float = 60.0) -> None:
        pending = set(self.procs)
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
                    status, _ = _http("GET", self.url(name) + "/health", timeout=2)
                except OSError:
                    status = 0
                if status == 200:
                    pending.discard(name)
                    _say(f"  {name:<12} healthy  {self.url(name)}")
            if time.monotonic() > deadline:
                raise SystemExit(f"not healthy after {timeout:.0f}s: {', '.join(sorted(pending))}; "
                                 f"see logs in {self.log_dir}")
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


def _demo_tokens(key: str) -> dict[str, str]:
    out = {}
    for role in ROLES:
        kwargs: dict[str, str] = {}
        if role in ("branch_system", "desk"):
            kwargs["site"] = DEMO_SITE
        if role == "driver":
            kwargs["driver"] = "driver-1"
        out[role] = issue_token(role, key=key, **kwargs)
    return out


def cmd_up(args: argparse.Namespace) -> int:
    settings = load_settings()
    state_dir = Path(settings.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    ports = {name: int(os.environ.get(f"{name.upper()}_PORT", DEFAULT_PORTS[name]))
             for name in SERVICES}
    for name, port in ports.items():
        if port_in_use(port):
            raise SystemExit(f"port {port} for {name} is in use: stop what holds it, or set "
                             f"{name.upper()}_PORT to another port")
    stack = Stack(settings, state_dir, ports, state_dir / "logs")
    stopping = {"now": False}

    def on_signal(signum: int, _frame: Any) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    try:
        _say("Branchline: starting the local network")
        stack.start_infrastructure(args.postgres_port, args.kafka_port)
        for name in SERVICES:
            stack.start_service(name)
        _say("  services starting (migrations, topics, consumer groups)...")
        stack.wait_healthy(timeout=args.timeout)
        tokens = _demo_tokens(stack.key)
        if not args.no_demo and DEMO_NETWORK.exists():
            status, body = _http("POST", stack.url("logistics") + "/network",
                                 json.loads(DEMO_NETWORK.read_text()), tokens["admin"], 30)
            if status == 200:
                _say(f"  demo network loaded: {body.get('sites')} sites")
            else:
                _say(f"  demo network NOT loaded ({status}): {body}")
        _say(f"\nAll four services healthy in {time.monotonic() - started:.1f}s.\n")
        for name in SERVICES:
            _say(f"  {name:<12} {stack.url(name)}   docs: {stack.url(name)}/docs")
        _say(f"\nTokens (valid 30 days; site-bound roles are for {DEMO_SITE}, "
             "driver for driver-1):")
        for role, token in tokens.items():
            _say(f"  {role:<13} {token}")
        _say(f"\nLogs: {stack.log_dir}/<service>.log   Stop with Ctrl-C.")
        while not stopping["now"]:
            for name, proc in stack.procs.items():
                if proc.poll() is not None:
                    _say(f"\n{name} exited with code {proc.returncode}; last log lines:\n"
                         f"{stack.tail(name)}\nStopping everything.")
                    stopping["now"] = True
                    break
            time.sleep(0.5)
        _say("\nStopping...")
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        _say("Stopped: no Branchline process left running.")


def cmd_token(args: argparse.Namespace) -> int:
    try:
        print(issue_token(args.role, site=args.site, driver=args.driver, ttl_days=args.days))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    return 0


def cmd_network_load(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: cannot read network file {path}: {exc}") from exc
    token = issue_token("admin")
    try:
        status, result = _http("POST", args.url.rstrip("/") + "/network", body, token, 60)
    except OSError as exc:
        raise SystemExit(f"error: logistics is not reachable at {args.url} ({exc}); "
                         "is `branchline up` running?") from exc
    if status != 200:
        raise SystemExit(f"error: the network was refused ({status}): "
                         f"{json.dumps(result, indent=2, ensure_ascii=False)}")
    print(f"loaded {result.get('sites')} sites from {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from bench.run import main as bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="branchline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole network locally until Ctrl-C")
    up.add_argument("--postgres-port", type=int,
                    default=int(os.environ.get("BRANCHLINE_POSTGRES_PORT", 5433)))
    up.add_argument("--kafka-port", type=int,
                    default=int(os.environ.get("BRANCHLINE_KAFKA_PORT", 9092)))
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for health")
    up.add_argument("--no-demo", action="store_true", help="do not load the demo network")
    up.set_defaults(func=cmd_up)

    tok = sub.add_parser("token", help="print a bearer token for the local signing key")
    tok.add_argument("--role", required=True, choices=ROLES)
    tok.add_argument("--site", help="site code, for branch_system and desk")
    tok.add_argument("--driver", help="driver id, for driver")
    tok.add_argument("--days", type=int, default=30, help="validity in days")
    tok.set_defaults(func=cmd_token)

    net = sub.add_parser("network", help="the library network's sites")
    net_sub = net.add_subparsers(dest="network_command", required=True)
    load = net_sub.add_parser("load", help="load a network file through logistics")
    load.add_argument("file")
    load.add_argument("--url", default=os.environ.get(
        "LOGISTICS_URL", f"http://127.0.0.1:{DEFAULT_PORTS['logistics']}"))
    load.set_defaults(func=cmd_network_load)

    bench = sub.add_parser("bench", help="measure check-in → shipment throughput and latency")
    bench.add_argument("--items", type=int, default=20000,
                       help="check-ins pushed for the throughput run")
    bench.add_argument("--rate", default="500,1000",
                       help="check-ins/s for the latency runs, comma-separated")
    bench.add_argument("--seconds", type=int, default=10, help="length of the latency run")
    bench.add_argument("--out", default=str(PROJECT_ROOT / "bench" / "results"))
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
