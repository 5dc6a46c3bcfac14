"""The `branchline` command: run the whole network locally, issue tokens, load a network.

    branchline up                 infrastructure, migrations, demo network, all services
    branchline token --role R     a bearer token for the local signing key
    branchline network load FILE  publish a network file's sites through logistics
    branchline routes bench       the route planner on VRPLIB instances (gap to best-known)
    branchline bench              the throughput/latency benchmark (devtools/bench/)
    branchline acquisition bench  a network-sized order opened and received (devtools/bench/)
    branchline replay --since T   re-publish outbox rows written at or after T
    branchline parked list        records parked for good (never publishable / consumable)
    branchline parked retry ID    put a parked record back into its service's outbox
    branchline users add NAME     a staff user of the web pages (role, site, password)
    branchline users list         the staff users
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from devtools.infra import port_in_use
from devtools.stack import DEMO_NETWORK, Stack, http, say
from devtools.staff import save_users
from shared.contracts import SERVICES
from shared.messaging import maintenance
from shared.service.auth import ROLES, issue_token
from shared.service.settings import DEFAULT_PORTS, PROJECT_ROOT, load_settings

DEMO_SITE = "JX-HN-01"


#: The demo network's first van driver: the driver token of `branchline up` is theirs.
DEMO_DRIVER = "D-01"
#: The staff pages' demo users, one per role: user name → (role, site, driver).
DEMO_USERS: dict[str, tuple[str, str | None, str | None]] = {
    "acquisitions": ("acquisitions", None, None),
    "cataloger": ("cataloger", None, None),
    "desk": ("desk", DEMO_SITE, None),
    "dispatcher": ("dispatcher", None, None),
    "driver": ("driver", None, DEMO_DRIVER),
    "admin": ("admin", None, None),
}


def _demo_users(database_url: str) -> dict[str, str]:
    """The demo users with fresh passwords (printed by `branchline up`)."""
    from web.users import new_password

    passwords = {name: new_password() for name in DEMO_USERS}
    asyncio.run(save_users(database_url, {
        name: (*DEMO_USERS[name], passwords[name]) for name in DEMO_USERS}))
    return passwords


def _demo_tokens(key: str) -> dict[str, str]:
    out = {}
    for role in ROLES:
        kwargs: dict[str, str] = {}
        if role in ("branch_system", "desk"):
            kwargs["site"] = DEMO_SITE
        if role == "driver":
            kwargs["driver"] = DEMO_DRIVER
        out[role] = issue_token(role, key=key, **kwargs)
    return out


def _database_url() -> str:
    return os.environ.get("DATABASE_URL") or load_settings().database_url


def cmd_users_add(args: argparse.Namespace) -> int:
    from web.users import UserProblem, new_password

    password = None if args.keep_password else (args.password or new_password())
    try:
        asyncio.run(save_users(_database_url(), {
            args.username: (args.role, args.site, args.driver, password)}))
    except UserProblem as exc:
        raise SystemExit(f"{exc.field}: {exc}") from exc
    except OSError as exc:
        raise SystemExit(f"cannot reach Postgres ({exc}): is `make run` up, or DATABASE_URL "
                         "set?") from exc
    shown = "" if password is None or args.password else f", password {password}"
    print(f"user {args.username!r} saved: role {args.role}{shown}")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    from shared.service.db import make_engine
    from web.users import all_users

    async def listed() -> list[Any]:
        from sqlmodel.ext.asyncio.session import AsyncSession
        engine = make_engine(_database_url(), pool_size=1)
        try:
            async with AsyncSession(engine) as session:
                return await all_users(session)
        finally:
            await engine.dispose()
    for user in asyncio.run(listed()):
        print(f"{user.username:<16} {user.role:<13} {user.site or user.driver or '':<12} "
              f"{'active' if user.active else 'disabled'}")
    return 0


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
    web_port = int(os.environ.get("WEB_PORT", 8100))
    if port_in_use(web_port):
        raise SystemExit(f"port {web_port} for the staff pages is in use: stop what holds it, "
                         "or set WEB_PORT to another port")
    stack = Stack(settings, state_dir, ports, state_dir / "logs", extra_env={
        "CATALOG_AUTO_COMPLETE": "true" if args.auto_catalog else "false"})
    stopping = {"now": False}

    def on_signal(signum: int, _frame: Any) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    try:
        say("Branchline: starting the local network")
        stack.start_infrastructure(args.postgres_port, args.kafka_port)
        for name in SERVICES:
            stack.start_service(name)
        stack.start_web(web_port)
        say("  services starting (migrations, topics, consumer groups)...")
        stack.wait_healthy(timeout=args.timeout)
        tokens = _demo_tokens(stack.key)
        if not args.no_demo and DEMO_NETWORK.exists():
            status, body = http("POST", stack.url("logistics") + "/network",
                                 json.loads(DEMO_NETWORK.read_text()), tokens["admin"], 30)
            if status == 200:
                say(f"  demo network loaded: {body.get('sites')} sites, "
                    f"{body.get('vehicles')} vehicles, {body.get('drivers')} drivers")
            else:
                say(f"  demo network NOT loaded ({status}): {body}")
        say(f"\nAll four services and the staff pages healthy in "
            f"{time.monotonic() - started:.1f}s.\n")
        for name in SERVICES:
            say(f"  {name:<12} {stack.url(name)}   docs: {stack.url(name)}/docs")
        say(f"\nStaff pages: {stack.url('web')}   sign in as (user name / password):")
        for name, password in _demo_users(stack.database_url).items():
            role, site, driver = DEMO_USERS[name]
            bound = f"  ({site or driver})" if site or driver else ""
            say(f"  {name:<13} {password}{bound}")
        say(f"\nTokens (valid 30 days; site-bound roles are for {DEMO_SITE}, "
             f"driver for {DEMO_DRIVER}):")
        for role, token in tokens.items():
            say(f"  {role:<13} {token}")
        say(f"\nLogs: {stack.log_dir}/<service>.log   Stop with Ctrl-C.")
        while not stopping["now"]:
            try:
                recovered = stack.supervise_broker()
            except Exception as exc:  # noqa: BLE001 - reported, then everything stops
                say(f"\nthe embedded broker died and could not be restarted: {exc}\n"
                    "Stopping everything.")
                break
            if recovered:
                say(f"\n{recovered}")
            for name, proc in stack.procs.items():
                if proc.poll() is not None:
                    say(f"\n{name} exited with code {proc.returncode}; last log lines:\n"
                         f"{stack.tail(name)}\nStopping everything.")
                    stopping["now"] = True
                    break
            time.sleep(0.5)
        say("\nStopping...")
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        say("Stopped: no Branchline process left running.")


def cmd_token(args: argparse.Namespace) -> int:
    try:
        print(issue_token(args.role, site=args.site, driver=args.driver, ttl_days=args.days))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    return 0


def cmd_routes_bench(args: argparse.Namespace) -> int:
    from devtools import routes_bench

    folder = Path(args.dir) if args.dir else routes_bench.HERE
    names = args.instances or list(routes_bench.DEFAULT_INSTANCES)
    return routes_bench.main(names, args.seconds, folder, args.seed,
                             Path(args.json) if args.json else None, args.reference)


def cmd_network_load(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: cannot read network file {path}: {exc}") from exc
    token = issue_token("admin")
    try:
        status, result = http("POST", args.url.rstrip("/") + "/network", body, token, 60)
    except OSError as exc:
        raise SystemExit(f"error: logistics is not reachable at {args.url} ({exc}); "
                         "is `branchline up` running?") from exc
    if status != 200:
        raise SystemExit(f"error: the network was refused ({status}): "
                         f"{json.dumps(result, indent=2, ensure_ascii=False)}")
    print(f"loaded {result.get('sites')} sites, {result.get('vehicles')} vehicles and "
          f"{result.get('drivers')} drivers from {path}")
    return 0


def parse_time(value: str) -> datetime:
    """An ISO 8601 time; without a zone it is taken as this machine's local time."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from exc
    return moment if moment.tzinfo is not None else moment.astimezone()


def cmd_replay(args: argparse.Namespace) -> int:
    settings = load_settings()
    services = args.service or list(SERVICES)

    async def run() -> int:
        failed = 0
        for name in services:
            try:
                async with maintenance.open_context(name, settings) as ctx:
                    count = await maintenance.replay(ctx, args.since)
            except Exception as exc:  # noqa: BLE001 - reported per service, others go on
                print(f"{name:<12} FAILED: {exc}")
                failed += 1
                continue
            print(f"{name:<12} {count} rows marked for re-publishing "
                  f"(written since {args.since.isoformat()})")
        return 1 if failed else 0

    return asyncio.run(run())


def _cell(value: Any, width: int) -> str:
    text = "" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= width else text[:width - 1] + "…"


def cmd_parked_list(args: argparse.Namespace) -> int:
    settings = load_settings()
    services = args.service or list(SERVICES)

    async def run() -> list[tuple[str, maintenance.ParkedRecord]]:
        out = []
        for name in services:
            async with maintenance.open_context(name, settings) as ctx:
                out += [(name, rec) for rec in await maintenance.list_parked(ctx)]
        return out

    records = asyncio.run(run())
    if not records:
        print("no parked records")
        return 0
    head = (f"{'service':<12} {'id':>6} {'stage':<8} {'topic':<24} {'error_type':<16} "
            f"{'parked_at':<20} {'retried_at':<20} reason")
    print(head)
    for name, rec in records:
        print(f"{name:<12} {rec.id:>6} {rec.stage:<8} {_cell(rec.topic, 24):<24} "
              f"{_cell(rec.error_type, 16):<16} {rec.parked_at:%Y-%m-%d %H:%M:%S}  "
              f"{rec.retried_at.strftime('%Y-%m-%d %H:%M:%S') if rec.retried_at else '-':<20} "
              f"{_cell(rec.reason, 80)}")
    return 0


def cmd_parked_retry(args: argparse.Namespace) -> int:
    settings = load_settings()

    async def run() -> int:
        async with maintenance.open_context(args.service, settings) as ctx:
            return await maintenance.retry_parked(ctx, args.id)

    try:
        outbox_id = asyncio.run(run())
    except maintenance.ParkedRetryError as exc:
        raise SystemExit(f"error: {exc}") from exc
    print(f"parked record {args.id} of {args.service} is back in the outbox as row "
          f"{outbox_id}")
    return 0


def cmd_acquisition_bench(args: argparse.Namespace) -> int:
    from devtools.bench.acquisition import main as acquisition_main

    return acquisition_main(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from devtools.bench.run import main as bench_main

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
    up.add_argument("--auto-catalog", action="store_true",
                    help="complete received copies at once instead of queueing them for "
                         "a cataloger (simulations)")
    up.set_defaults(func=cmd_up)

    tok = sub.add_parser("token", help="print a bearer token for the local signing key")
    tok.add_argument("--role", required=True, choices=ROLES)
    tok.add_argument("--site", help="site code, for branch_system and desk")
    tok.add_argument("--driver", help="driver id, for driver")
    tok.add_argument("--days", type=int, default=30, help="validity in days")
    tok.set_defaults(func=cmd_token)

    users = sub.add_parser("users", help="staff users of the web pages")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    uadd = users_sub.add_parser("add", help="create a user, or change one (role, site, "
                                            "password)")
    uadd.add_argument("username")
    uadd.add_argument("--role", required=True, choices=ROLES)
    uadd.add_argument("--site", help="site code, for desk and branch_system users")
    uadd.add_argument("--driver", help="driver id, for driver users")
    uadd.add_argument("--password", help="default: a new one, printed (or kept when the "
                                          "user exists and --keep-password is given)")
    uadd.add_argument("--keep-password", action="store_true")
    uadd.set_defaults(func=cmd_users_add)
    ulist = users_sub.add_parser("list", help="the staff users")
    ulist.set_defaults(func=cmd_users_list)

    webp = sub.add_parser("web", help="the staff pages")
    web_sub = webp.add_subparsers(dest="web_command", required=True)
    wbench = web_sub.add_parser(
        "bench", help="each person's pages on the demo data: server time p50/p95 per page")
    from devtools.bench import web as web_bench
    web_bench.add_arguments(wbench)
    wbench.set_defaults(func=web_bench.main)

    net = sub.add_parser("network", help="the library network's sites")
    net_sub = net.add_subparsers(dest="network_command", required=True)
    load = net_sub.add_parser("load", help="load a network file through logistics")
    load.add_argument("file")
    load.add_argument("--url", default=os.environ.get(
        "LOGISTICS_URL", f"http://127.0.0.1:{DEFAULT_PORTS['logistics']}"))
    load.set_defaults(func=cmd_network_load)

    routes = sub.add_parser("routes", help="the daily route planner")
    routes_sub = routes.add_subparsers(dest="routes_command", required=True)
    rbench = routes_sub.add_parser(
        "bench", help="the planner on VRPLIB instances: cost, best-known and gap")
    rbench.add_argument("--seconds", type=float, nargs="+", default=[5.0, 30.0],
                        help="solver time limits, each run on every instance (default: 5 30)")
    rbench.add_argument("--instances", nargs="+", default=None,
                        help="instance names (default: the six of docs/planning.md)")
    rbench.add_argument("--dir", default=None, help="folder of .vrp/.sol files "
                        "(default: devtools/bench/vrp)")
    rbench.add_argument("--seed", type=int, default=0)
    rbench.add_argument("--json", default=None, help="also write the results to this file")
    rbench.add_argument("--reference", action="store_true",
                        help="plan the reference network's demanding day instead (every "
                             "site has crates), then re-plan it after a change")
    rbench.set_defaults(func=cmd_routes_bench)

    marc = sub.add_parser("marc", help="MARC records into cataloging")
    marc_sub = marc.add_subparsers(dest="marc_command", required=True)
    mimport = marc_sub.add_parser(
        "import", help="import a MARC file of any size, in uploads, with a progress bar")
    from devtools import marcimport
    marcimport.add_arguments(mimport, os.environ.get(
        "CATALOGING_URL", f"http://127.0.0.1:{DEFAULT_PORTS['cataloging']}"))
    mimport.set_defaults(func=marcimport.main)
    mbench = marc_sub.add_parser(
        "bench", help="search at catalogue scale: 1,000,000 bibs, p50/p99 per kind of query")
    from devtools.bench import search as search_bench
    search_bench.add_arguments(mbench)
    mbench.set_defaults(func=search_bench.main)
    ibench = marc_sub.add_parser(
        "import-bench", help="MARC import records/s (MARC 21 and CNMARC, new and matched) and "
                             "the service's memory, beside raw pymarc and COPY baselines")
    from devtools.bench import imports as import_bench
    import_bench.add_arguments(ibench)
    ibench.set_defaults(func=import_bench.main)

    acq = sub.add_parser("acquisition", help="the acquisition center")
    acq_sub = acq.add_subparsers(dest="acquisition_command", required=True)
    abench = acq_sub.add_parser(
        "bench", help="a 2,000-line order over 100 branches: open, receive 5,000 copies, and "
        "time until they are catalogued and on transfers")
    from devtools.bench.acquisition import add_arguments
    add_arguments(abench)
    abench.set_defaults(func=cmd_acquisition_bench)

    bench = sub.add_parser("bench", help="measure check-in → shipment throughput and latency")
    bench.add_argument("--items", type=int, default=20000,
                       help="check-ins pushed for the throughput run")
    bench.add_argument("--rate", default="500,1000,2000",
                       help="check-ins/s for the latency runs, comma-separated")
    bench.add_argument("--seconds", type=int, default=10,
                       help="length of each latency run and HTTP run")
    bench.add_argument("--replicas", type=int, default=1, choices=range(1, 5),
                       metavar="N", help="consuming processes of circulation and logistics "
                       "(1-4; the topics have 4 partitions)")
    bench.add_argument("--http-rate", type=int, default=200,
                       help="requests/s of each desk call in the HTTP runs")
    bench.add_argument("--load-rate", type=int, default=1000,
                       help="check-ins/s consumed in the background of the HTTP runs")
    bench.add_argument("--consumer-nice", type=int, default=10, choices=range(0, 20),
                       metavar="N", help="PROCESS_NICE of the services' consuming processes "
                       "(0-19; the HTTP-only process runs at 0)")
    bench.add_argument("--compare", nargs="?", const="", default=None, metavar="FILE",
                       help="compare with this results JSON (default: the previous run's, "
                            "which is compared with whenever it exists)")
    bench.add_argument("--out", default=str(PROJECT_ROOT / "devtools" / "bench" / "results"))
    bench.set_defaults(func=cmd_bench)

    rep = sub.add_parser("replay", help="re-publish outbox rows written since a time "
                         "(choose it at or before the broker's restore point, less the "
                         "relay's lag)")
    rep.add_argument("--since", required=True, type=parse_time,
                     help="ISO 8601 time (local time when it has no zone)")
    rep.add_argument("--service", action="append", choices=SERVICES,
                     help="one service (repeatable); default: all four")
    rep.set_defaults(func=cmd_replay)

    parked = sub.add_parser("parked", help="records parked for good: inspect and retry")
    parked_sub = parked.add_subparsers(dest="parked_command", required=True)
    plist = parked_sub.add_parser("list", help="a table of parked records")
    plist.add_argument("--service", action="append", choices=SERVICES,
                       help="one service (repeatable); default: all four")
    plist.set_defaults(func=cmd_parked_list)
    pretry = parked_sub.add_parser("retry", help="put a parked record back into the outbox")
    pretry.add_argument("id", type=int)
    pretry.add_argument("--service", required=True, choices=SERVICES)
    pretry.set_defaults(func=cmd_parked_retry)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
