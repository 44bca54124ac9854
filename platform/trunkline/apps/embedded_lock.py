"""One ``trunkline up`` per SQLite database.

A second ``up`` on the database of a running one points the simulated pools at its own
engines: the first one's gateway follows the database, so its requests went to the second's
engines, and all failed once the second stopped. An advisory lock (``flock``) on a file beside
the database says one is running; the kernel releases it when its process ends, however.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from trunkline.errors import ConfigurationError
from trunkline.kit.migrate import database_name, sqlite_file

LOCK_SUFFIX = ".up-lock"


def lock_file(url: str) -> Path | None:
    """Where ``up`` on ``url`` holds its lock; None for a database that is not a file."""
    path = sqlite_file(url)
    return None if path is None else path.with_name(path.name + LOCK_SUFFIX)


@contextlib.contextmanager
def only_instance(url: str) -> Iterator[None]:
    """Hold the lock of ``url`` while the block runs; refuse when another process holds it."""
    path = lock_file(url)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if not _lock(fd):
            raise ConfigurationError(_refusal(url, fd))
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # and the lock with it


def running_instance(url: str) -> str | None:
    """What :func:`only_instance` would refuse with now, without holding the lock after."""
    path = lock_file(url)
    if path is None or not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        return None if _lock(fd) else _refusal(url, fd)
    finally:
        os.close(fd)


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _refusal(url: str, fd: int) -> str:
    pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
    holder = f" (pid {pid})" if pid.isdigit() else ""
    return (
        f"another `trunkline up`{holder} is serving the database {database_name(url)}: stop "
        "it first (Ctrl-C), or give this one its own state and database, e.g. "
        "TRUNKLINE_STATE_DIR=.trunkline/2 "
        "TRUNKLINE_DATABASE__URL=sqlite:///.trunkline/2/trunkline.db (and other ports)"
    )
