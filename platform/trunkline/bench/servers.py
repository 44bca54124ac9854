"""Throw-away PostgreSQL and Redis servers for benchmarks (and fault tests), outside pytest.

Each listens on loopback on a free port and keeps its files in a new temporary directory that
``destroy()`` removes. PostgreSQL runs with its production durability settings unless told
otherwise (a benchmark that compares commit strategies must pay for real commits); it refuses
to run as root, so its tools then run as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis
from psycopg import sql

from trunkline.bench.processes import LOOPBACK, free_loopback_ports
from trunkline.errors import TrunklineError

__all__ = ["PostgresCluster", "RedisInstance", "start_postgres", "start_redis"]

INSTALL_HINT = "install them: apt-get install postgresql redis-server"
FAST_UNSAFE = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")


def _fail(message: str) -> TrunklineError:
    return TrunklineError(message, reason="benchmark_server_failed")


def _postgres_bindir() -> Path:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise _fail(f"PostgreSQL server binaries not found; {INSTALL_HINT}")


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd="/")  # noqa: S603
    if done.returncode != 0:
        raise _fail(f"{' '.join(cmd)} failed: {done.stdout}{done.stderr}")


@dataclass
class PostgresCluster:
    """A cluster that can be stopped and started again on its data (outages), then destroyed."""

    port: int
    base_dir: Path
    bindir: Path
    options: tuple[str, ...] = ()
    _running: bool = field(default=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@{LOOPBACK}:{self.port}/{dbname}"

    def dsn(self, dbname: str) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/{dbname}"

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses={LOOPBACK} "
        opts += f"-c unix_socket_directories={self.base_dir / 'run'} " + " ".join(self.options)
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "60"]
        _run(
            _as_postgres([*pg_ctl, "-l", str(self.base_dir / "postgres.log"), "-o", opts, "start"])
        )
        self._running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (its data stays); ``immediate`` is a crash."""
        if self._running:
            pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w"]
            _run(_as_postgres([*pg_ctl, "stop"]))
            self._running = False

    def destroy(self) -> None:
        with contextlib.suppress(TrunklineError):
            self.stop("immediate")
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)


def start_postgres(parent: Path | None = None, *, durable: bool = True) -> PostgresCluster:
    """initdb and start a cluster; ``durable=False`` turns fsync and friends off."""
    bindir = _postgres_bindir()
    base = Path(tempfile.mkdtemp(prefix="trunkline-pg-", dir=parent))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(base, owner.pw_uid, owner.pw_gid)
    options = () if durable else FAST_UNSAFE
    cluster = PostgresCluster(free_loopback_ports(1)[0], base, bindir, options)
    try:
        _run(_as_postgres(["mkdir", "-p", str(base / "run")]))
        initdb = [str(bindir / "initdb"), "-D", str(cluster.data_dir), "-U", "postgres"]
        _run(
            _as_postgres([*initdb, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-instructions"])
        )
        cluster.start()
    except BaseException:
        cluster.destroy()
        raise
    return cluster


@dataclass
class RedisInstance:
    port: int
    data_dir: Path
    appendonly: bool
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> None:
        """Start (again) on the same port and files, so the append-only file is replayed."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise _fail(f"redis-server not found; {INSTALL_HINT}")
        cmd = [binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", ""]
        cmd += ["--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.data_dir)]
        cmd += ["--logfile", str(self.data_dir / "redis.log")]
        self._process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)  # noqa: S603
        deadline = time.monotonic() + 30
        probe = redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=1)
        with probe:
            while time.monotonic() < deadline and self._process.poll() is None:
                with contextlib.suppress(redis.RedisError):
                    if probe.info("server")["process_id"] == self._process.pid:
                        return
                time.sleep(0.02)
        self.kill()
        raise _fail(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        """Graceful shutdown: the append-only file is flushed."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def start_redis(parent: Path | None = None, *, appendonly: bool = True) -> RedisInstance:
    data_dir = Path(tempfile.mkdtemp(prefix="trunkline-redis-", dir=parent))
    instance = RedisInstance(free_loopback_ports(1)[0], data_dir, appendonly)
    try:
        instance.start()
    except BaseException:
        instance.destroy()
        raise
    return instance
