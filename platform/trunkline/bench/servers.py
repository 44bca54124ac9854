"""Throw-away PostgreSQL and Redis servers, for benchmarks and (through ``tests/support``) tests.

Each listens on loopback on a free port (a port another process takes first is retried) and
keeps its files in a new temporary directory that ``destroy()`` removes. PostgreSQL runs with
its production durability settings unless told otherwise (a benchmark that compares commit
strategies must pay for real commits); it refuses to run as root, so its tools then run as the
``postgres`` user. A missing binary raises an error naming what to install: nothing skips.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psycopg
import redis
from psycopg import sql
from redis.backoff import NoBackoff
from redis.retry import Retry

from trunkline.bench.processes import LOOPBACK, free_loopback_ports
from trunkline.errors import TrunklineError

__all__ = [
    "INSTALL_HINT",
    "PostgresCluster",
    "RedisInstance",
    "log_tail",
    "start_postgres",
    "start_redis",
]

INSTALL_HINT = "apt-get install postgresql redis-server, or run `make test` (it installs them)"
# Durability is pointless for a throw-away cluster; these make writes cheap.
FAST_UNSAFE = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
PORT_ATTEMPTS = 3


def _fail(message: str) -> TrunklineError:
    return TrunklineError(message, reason="server_failed")


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd="/")  # noqa: S603
    if done.returncode != 0:
        raise _fail(
            f"{what} failed (exit {done.returncode}): {shlex.join(cmd)}\n{done.stdout}{done.stderr}"
        )


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` of a server's log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# --- PostgreSQL -------------------------------------------------------------------------------


def _postgres_bindir() -> Path:
    """The server bin dir; ``pg_config`` alone proves nothing (libpq-dev ships it too)."""
    candidates: list[str] = []
    if pg_config := shutil.which("pg_config"):
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)  # noqa: S603
        candidates.append(done.stdout.strip())
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(versions, key=lambda p: int(re.sub(r"\D", "", p) or 0), reverse=True)
    for candidate in filter(None, candidates):
        bindir = Path(candidate)
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "pg_isready")):
            return bindir
    raise _fail(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {INSTALL_HINT}")


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user then."""
    if os.geteuid() != 0:
        return cmd
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise _fail(f"running as root but no `postgres` user exists: {INSTALL_HINT}") from None
    return ["runuser", "-u", "postgres", "--", *cmd]


@dataclass
class PostgresCluster:
    """A cluster that can be stopped and started again on its data (outages), then destroyed.

    Superuser ``postgres`` with trust authentication.
    """

    port: int
    base_dir: Path
    bindir: Path
    options: tuple[str, ...] = ()
    _running: bool = field(default=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    def url(self, dbname: str) -> str:
        """SQLAlchemy URL (sync and async engines)."""
        return f"postgresql+psycopg://postgres@{LOOPBACK}:{self.port}/{dbname}"

    def dsn(self, dbname: str) -> str:
        """libpq connection string, for ``psycopg.connect`` and command-line tools."""
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/{dbname}"

    def start(self) -> None:
        """Start on ``port`` and wait until it accepts connections."""
        opts = f"-p {self.port} -c listen_addresses={LOOPBACK} "
        opts += f"-c unix_socket_directories={shlex.quote(str(self.base_dir / 'run'))} "
        opts += " ".join(self.options)
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file)]
        pg_ctl += ["-w", "-t", str(int(START_TIMEOUT_S)), "-o", opts, "start"]
        done = subprocess.run(  # noqa: S603
            _as_postgres(pg_ctl), capture_output=True, text=True, check=False, cwd="/"
        )
        if done.returncode != 0:
            raise _fail(
                f"PostgreSQL did not start on port {self.port}:\n{done.stdout}{done.stderr}\n"
                f"{log_tail(self.log_file)}"
            )
        self._running = True
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        cmd = [str(self.bindir / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(self.port)]
        cmd += ["-U", "postgres", "-d", "postgres", "-t", "1"]
        while subprocess.run(cmd, check=False).returncode != 0:  # noqa: S603
            if time.monotonic() > deadline:
                raise _fail(f"PostgreSQL on port {self.port} never accepted connections")
            time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (its data stays); ``immediate`` is a crash."""
        if self._running:
            self._pg_ctl_stop(mode)

    def destroy(self) -> None:
        """Stop at once (no checkpoint: nothing here is worth keeping) and delete the files."""
        if self._running or (self.data_dir / "postmaster.pid").exists():  # else it is down
            with contextlib.suppress(TrunklineError):
                self._pg_ctl_stop("immediate")
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def _pg_ctl_stop(self, mode: str) -> None:
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w"]
        _run(_as_postgres([*pg_ctl, "stop"]), "pg_ctl stop")
        self._running = False

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """CREATE DATABASE ``name`` (empty, or a copy of ``template``); its SQLAlchemy URL.

        Cloning a template that already holds the migrated schema is much faster than migrating
        every database; the template must have no open connections while it is copied.
        """
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
        self.execute(statement)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE, terminating connections left open."""
        self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def execute(self, statement: sql.Composed) -> None:
        """Run one statement in the ``postgres`` maintenance database (autocommit)."""
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(statement)


def _postgres_base_dir(parent: Path | None) -> Path:
    base = Path(tempfile.mkdtemp(prefix="trunkline-pg-", dir=parent))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(base, owner.pw_uid, owner.pw_gid)
    return base


def start_postgres(parent: Path | None = None, *, durable: bool = True) -> PostgresCluster:
    """initdb a cluster in a new dir under ``parent`` and start it on a free loopback port.

    ``durable=False`` turns fsync and friends off. On failure, Ctrl-C included, no postmaster or
    files are left behind.
    """
    bindir = _postgres_bindir()
    _as_postgres(["true"])  # fail early and clearly when root has no postgres user
    base = _postgres_base_dir(parent)
    cluster = PostgresCluster(0, base, bindir, () if durable else FAST_UNSAFE)
    try:
        _run(_as_postgres(["mkdir", "-p", str(base / "run")]), "mkdir socket dir")
        initdb = [str(bindir / "initdb"), "-D", str(cluster.data_dir), "-U", "postgres"]
        initdb += ["-A", "trust", "-E", "UTF8", "--locale=C", "--no-instructions"]
        _run(_as_postgres([*initdb, *(() if durable else ("--no-sync",))]), "initdb")
        _start_on_free_port(cluster, "could not bind")
    except BaseException:
        cluster.destroy()
        raise
    return cluster


# --- Redis ------------------------------------------------------------------------------------


@dataclass
class RedisInstance:
    """A redis-server we own; ``stop``/``start``/``restart``/``kill`` for outages and faults.

    It runs as our child in its own session (like ``--daemonize yes``, Ctrl-C does not reach it),
    so a death at start is seen at once and a stop waits for the real process, zombies included.
    """

    port: int
    data_dir: Path
    appendonly: bool
    binary: str
    host: str = LOOPBACK
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.is_running() and self._process else None

    def client(self) -> redis.Redis:
        """A client that fails at once when the server is down (redis-py retries by default)."""
        return redis.Redis(
            host=self.host, port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0)
        )

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start (again) on the same port and files, so the append-only file is replayed."""
        if self.is_running():
            return
        cmd = [self.binary, "--port", str(self.port), "--bind", self.host, "--daemonize", "no"]
        cmd += ["--save", "", "--appendonly", "yes" if self.appendonly else "no"]
        cmd += ["--dir", str(self.data_dir), "--pidfile", str(self.data_dir / "redis.pid")]
        cmd += ["--logfile", str(self.log_file)]
        self._process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)  # noqa: S603
        self._wait_ready(self._process)

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        probe = redis.Redis(
            host=self.host, port=self.port, socket_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        with probe:
            while process.poll() is None and time.monotonic() < deadline:
                # The pid check proves the answer comes from our process, not a squatter.
                with contextlib.suppress(redis.RedisError):  # not listening yet, loading...
                    if probe.info("server")["process_id"] == process.pid:
                        return
                time.sleep(0.02)
        self.kill()
        raise _fail(f"redis-server on port {self.port} did not answer:\n{log_tail(self.log_file)}")

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM: the AOF is flushed). A no-op when not running."""
        if self._process is not None and self.is_running():
            self._process.terminate()
            try:
                self._process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """Crash it (SIGKILL): writes not yet fsynced to the AOF are lost, as in a real crash."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def flushall(self) -> None:
        with self.client() as client:
            client.flushall()

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def start_redis(parent: Path | None = None, *, appendonly: bool = True) -> RedisInstance:
    """Start redis-server on a free loopback port with its files in a new dir under ``parent``."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise _fail(f"redis-server not found: {INSTALL_HINT}")
    data_dir = Path(tempfile.mkdtemp(prefix="trunkline-redis-", dir=parent))
    instance = RedisInstance(0, data_dir, appendonly, binary)
    try:
        _start_on_free_port(instance, "Address already in use")
    except BaseException:
        instance.destroy()
        raise
    return instance


class _Startable(Protocol):
    port: int

    @property
    def log_file(self) -> Path: ...

    def start(self) -> None: ...


def _start_on_free_port(server: _Startable, busy: str) -> None:
    """Start ``server`` on a free loopback port; on another one when its log says ``busy`` (a
    process took the port between our pick and the server's bind), up to PORT_ATTEMPTS times."""
    for attempt in range(PORT_ATTEMPTS):
        server.port = free_loopback_ports(1)[0]
        server.log_file.unlink(missing_ok=True)
        try:
            server.start()
            return
        except TrunklineError:
            if busy not in log_tail(server.log_file) or attempt == PORT_ATTEMPTS - 1:
                raise
