"""Real, throw-away PostgreSQL and Redis servers for integration tests.

Each server listens on 127.0.0.1 on a free port, keeps its files in a temporary directory and is
gone after ``stop()``. A missing binary raises ``RuntimeError`` naming what to install: tests
that need a server fail loudly, they never skip.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis
from psycopg import sql
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "INSTALL_HINT",
    "Database",
    "PostgresServer",
    "RedisServer",
    "create_database",
    "drop_database",
    "free_port",
    "start_postgres",
    "start_redis",
    "unique_database_name",
]

INSTALL_HINT = "apt-get install postgresql redis-server, or run `make test` (it installs them)"
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
RAM_DIR = Path("/dev/shm")
INITDB_OPTIONS = "-U postgres -A trust -E UTF8 --locale=C --no-sync --no-instructions"
# Durability is pointless for a throw-away cluster; these make writes cheap.
SERVER_OPTIONS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


def free_port() -> int:
    """A TCP port free on loopback right now (callers retry if another process takes it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd="/")
    if done.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {done.returncode}): {shlex.join(cmd)}\n{done.stdout}{done.stderr}"
        )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# --- PostgreSQL -------------------------------------------------------------------------------


def _postgres_bindir() -> Path:
    """The server bin dir; ``pg_config`` alone proves nothing (libpq-dev ships it too)."""
    candidates: list[str] = []
    if pg_config := shutil.which("pg_config"):
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(done.stdout.strip())
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(versions, key=lambda p: int(re.sub(r"\D", "", p) or 0), reverse=True)
    for candidate in filter(None, candidates):
        bindir = Path(candidate)
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "pg_isready")):
            return bindir
    raise RuntimeError(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {INSTALL_HINT}")


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user then."""
    if os.geteuid() != 0:
        return cmd
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            f"running as root but no `postgres` user exists: {INSTALL_HINT}"
        ) from None
    return ["runuser", "-u", "postgres", "--", *cmd]


@dataclass
class PostgresServer:
    """A running throw-away cluster; superuser ``postgres`` with trust auth."""

    port: int
    bindir: Path
    base_dir: Path
    host: str = HOST
    user: str = "postgres"
    _stopped: bool = field(default=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL (sync and async engines) of the ``postgres`` maintenance database."""
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def dsn_for(self, dbname: str) -> str:
        """libpq connection string, for ``psycopg.connect`` and command-line tools."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def stop(self) -> None:
        """Stop at once (no checkpoint: nothing here is worth keeping) and delete the cluster."""
        if self._stopped:
            return
        self._stopped = True
        if (self.data_dir / "postmaster.pid").exists():  # else it is already down
            pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate"]
            _run(_as_postgres([*pg_ctl, "-w", "stop"]), "pg_ctl stop")
        shutil.rmtree(self.base_dir, ignore_errors=True)


def _postgres_base_dir(tmpdir: Path) -> Path:
    """A new private dir for the cluster; ``stop()`` deletes it.

    RAM (/dev/shm) when available: CREATE DATABASE per test drops from 100-250 ms on disk to
    10-30 ms. Otherwise ``tmpdir``, unless we are root (the ``postgres`` user cannot enter pytest's
    0700 temp dirs) or its path is too long for a unix socket (108 bytes): the system temp dir then.
    """
    parent: Path | None = None
    if os.access(RAM_DIR, os.W_OK | os.X_OK):
        parent = RAM_DIR
    elif os.geteuid() != 0 and len(str(tmpdir)) <= 60:
        parent = tmpdir
    base = Path(tempfile.mkdtemp(prefix="trunkline-pg-", dir=parent))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(base, owner.pw_uid, owner.pw_gid)
    return base


def start_postgres(tmpdir: Path) -> PostgresServer:
    """initdb a fresh cluster in a temp dir and start it on a free loopback port."""
    bindir = _postgres_bindir()
    _as_postgres(["true"])  # fail early and clearly when root has no postgres user
    base = _postgres_base_dir(Path(tmpdir))
    try:
        _run(_as_postgres(["mkdir", "-p", str(base / "run")]), "mkdir socket dir")
        initdb = [str(bindir / "initdb"), "-D", str(base / "data"), *INITDB_OPTIONS.split()]
        _run(_as_postgres(initdb), "initdb")
        for _attempt in range(3):
            server = PostgresServer(free_port(), bindir, base)
            done = _pg_ctl_start(server)
            if done.returncode == 0:
                _wait_postgres_ready(server)
                return server
            if "could not bind" not in _tail(server.log_file):  # lost the port race: retry
                break
        raise RuntimeError(
            f"PostgreSQL did not start:\n{done.stdout}{done.stderr}\n{_tail(server.log_file)}"
        )
    except BaseException:  # Ctrl-C included: never leave a postmaster or its files behind
        PostgresServer(0, bindir, base).stop()
        raise


def _pg_ctl_start(server: PostgresServer) -> subprocess.CompletedProcess[str]:
    options = (
        f"-p {server.port} -c listen_addresses={server.host} "
        f"-c unix_socket_directories={shlex.quote(str(server.base_dir / 'run'))} {SERVER_OPTIONS}"
    )
    server.log_file.unlink(missing_ok=True)
    pg_ctl = [str(server.bindir / "pg_ctl"), "-D", str(server.data_dir), "-l", str(server.log_file)]
    pg_ctl += ["-w", "-t", str(int(START_TIMEOUT)), "-o", options, "start"]
    return subprocess.run(
        _as_postgres(pg_ctl), capture_output=True, text=True, check=False, cwd="/"
    )


def _wait_postgres_ready(server: PostgresServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    cmd = [str(server.bindir / "pg_isready"), "-q", "-h", server.host, "-p", str(server.port)]
    cmd += ["-U", server.user, "-d", "postgres", "-t", "1"]
    while subprocess.run(cmd, check=False).returncode != 0:
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"PostgreSQL on port {server.port} never accepted connections")
        time.sleep(0.05)


@dataclass(frozen=True)
class Database:
    """A database made for one test: SQLAlchemy ``url`` and libpq ``dsn`` (for psycopg)."""

    name: str
    url: str
    dsn: str


def unique_database_name(hint: str) -> str:
    """A valid, unique database name (≤ 63 bytes) derived from ``hint``, e.g. a test name."""
    stem = re.sub(r"[^a-z0-9]+", "_", hint.lower()).strip("_")[:40]
    return f"t_{stem}_{uuid.uuid4().hex[:12]}"


def _admin_execute(server: PostgresServer, statement: sql.Composed) -> None:
    with psycopg.connect(server.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(statement)


def create_database(server: PostgresServer, name: str, *, template: str | None = None) -> str:
    """CREATE DATABASE ``name`` (empty, or a copy of ``template``); returns its SQLAlchemy URL.

    Cloning a template that already holds the migrated schema is much faster than migrating
    every test's database; the template must have no open connections while it is copied.
    """
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
    _admin_execute(server, statement)
    return server.url_for(name)


def drop_database(server: PostgresServer, name: str) -> None:
    """DROP DATABASE, terminating connections a test left open."""
    _admin_execute(
        server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )


# --- Redis ------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    """A redis-server we own; ``stop``/``start``/``restart``/``kill`` for fault tests.

    It runs as our child in its own session (like ``--daemonize yes``, Ctrl-C does not reach it),
    so a death at start is seen at once and a stop waits for the real process, zombies included.
    """

    port: int
    data_dir: Path
    appendonly: bool
    binary: str
    host: str = HOST
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
        """Start (again) on the same port and data dir, so AOF data is reloaded."""
        if self.is_running():
            return
        cmd = [self.binary, "--port", str(self.port), "--bind", self.host, "--daemonize", "no"]
        cmd += ["--save", "", "--appendonly", "yes" if self.appendonly else "no"]
        cmd += ["--dir", str(self.data_dir), "--pidfile", str(self.data_dir / "redis.pid")]
        cmd += ["--logfile", str(self.log_file)]
        self._process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready(self._process)

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        probe = redis.Redis(
            host=self.host, port=self.port, socket_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        with probe:
            while process.poll() is None and time.monotonic() < deadline:
                try:
                    # The pid check proves the answer comes from our process, not a squatter.
                    if probe.info("server")["process_id"] == process.pid:
                        return
                except redis.RedisError:  # not listening yet, loading the AOF, a squatter...
                    pass
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(
            f"redis-server on port {self.port} did not answer:\n{_tail(self.log_file)}"
        )

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM: the AOF is flushed). A no-op when not running."""
        if self._process is not None and self.is_running():
            self._process.terminate()
            try:
                self._process.wait(STOP_TIMEOUT)
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


def start_redis(tmpdir: Path, appendonly: bool = False) -> RedisServer:
    """Start redis-server on a free loopback port with its files in a new dir under ``tmpdir``."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(f"redis-server not found: {INSTALL_HINT}")
    data_dir = Path(tempfile.mkdtemp(prefix="redis-", dir=tmpdir))
    for _attempt in range(3):
        server = RedisServer(free_port(), data_dir, appendonly, binary)
        server.log_file.unlink(missing_ok=True)
        try:
            server.start()
            return server
        except RuntimeError:
            if "Address already in use" not in _tail(server.log_file):  # lost the port race
                raise
    raise RuntimeError(f"redis-server found no free port:\n{_tail(server.log_file)}")
