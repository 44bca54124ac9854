"""Servers a benchmark runs in processes of their own, so the load generator never shares a GIL
with what it measures.

Use :class:`ServerProcess` as a context manager (or inside a :class:`contextlib.ExitStack`): the
child is stopped on the way out whatever happened, an exception or Ctrl-C included. Readiness is
polled on an HTTP URL, never assumed after a fixed sleep. Output goes to a log file that errors
quote.

:class:`LoggedProcess` is the plainer child the test fixtures (``tests/support/processes.py``) and
the vLLM launcher (:mod:`trunkline.bench.vllm_server`) build on: a log file, ``wait_until`` a
check passes (failing early when the child exits) and a signal-then-kill ``stop``.
:func:`free_loopback_ports` serves benchmarks and tests alike.
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import httpx

from trunkline.errors import TrunklineError

__all__ = [
    "LoggedProcess",
    "ServerProcess",
    "free_loopback_ports",
    "python_module",
    "sigterm_as_exit",
]

LOOPBACK = "127.0.0.1"


def free_loopback_ports(count: int) -> list[int]:
    """``count`` distinct ports free on loopback just now, which children bind next.

    They are drawn below the OS's ephemeral range (``ip_local_port_range``), whose ports every
    outgoing connection takes its local port from: a port picked there (binding port 0) can be
    taken by some client's connection in the seconds before a child binds it (vLLM binds its
    ZMQ sockets after ≈20 s of start-up). Below it only servers that bind explicitly compete."""
    low = _ephemeral_low()
    pool = range(max(1024, low - 16_384), low)
    # Not the seeded module-level generator: two processes seeded alike would pick alike.
    candidates = random.SystemRandom().sample(pool, k=min(4 * count + 64, len(pool)))
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for port in candidates:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                sock.bind((LOOPBACK, port))  # held until all are picked: no port twice
            except OSError:
                continue  # in use
            ports.append(port)
            if len(ports) == count:
                return ports
    raise OSError(f"no {count} free loopback ports below {low}")


def _ephemeral_low(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    """The first port of the OS's ephemeral range (Linux's default when it cannot be read)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def python_module(module: str, *args: str) -> list[str]:
    """``python -m module args…`` with this interpreter, so children run the same install."""
    return [sys.executable, "-m", module, *args]


class LoggedProcess:
    """A child process whose output goes to ``log``, a file that failures quote.

    ``popen_options`` go to :class:`subprocess.Popen` as they are (``stdin``,
    ``start_new_session``, ``preexec_fn``...).
    """

    def __init__(
        self, args: list[str], env: dict[str, str], cwd: Path, log: Path, **popen_options: Any
    ) -> None:
        self.log = log
        self._handle = log.open("wb")
        self.popen = subprocess.Popen(  # noqa: S603 - callers pass their own arguments
            args, env=env, cwd=cwd, stdout=self._handle, stderr=subprocess.STDOUT, **popen_options
        )

    def output(self) -> str:
        if not self._handle.closed:
            self._handle.flush()
        return self.log.read_text(errors="replace")

    def wait_until(self, check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
        """Poll ``check`` until it passes; raise, quoting the log, if the child exits first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"process exited ({self.popen.returncode}) before {what}:\n{self.output()}"
                )
            if check():
                return
            time.sleep(0.05)
        raise TimeoutError(f"timed out waiting for {what}:\n{self.output()[-4000:]}")

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 20.0) -> int:
        """Send ``sig``, then kill whatever is left after ``timeout_s``; the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout_s)
        self._kill_rest()
        self.popen.wait()
        self._handle.close()
        return self.popen.returncode

    def _kill_rest(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()


class ServerProcess:
    """A child server process, started on ``__enter__`` and stopped on ``__exit__``."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            # The child keeps its own copy of the descriptor.
            self._popen = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_ready(self, url: str, timeout_s: float = 60.0) -> None:
        """Poll ``url`` until it answers 200; fail early if the process exits."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if not self.running():
                    raise self._failure(
                        f"exited with code {self._returncode()} before it was ready"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return
                time.sleep(0.05)
        raise self._failure(f"was not ready at {url} within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (uvicorn shuts down gracefully), then SIGKILL after ``timeout_s``."""
        popen = self._popen
        if popen is None or popen.poll() is not None:
            return
        popen.terminate()
        try:
            popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()

    def log_tail(self, max_chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-max_chars:]
        except OSError:
            return ""

    def _returncode(self) -> int | None:
        return None if self._popen is None else self._popen.returncode

    def _failure(self, what: str) -> TrunklineError:
        return TrunklineError(
            f"the {self.name} process {what}; its log ({self.log_path}) ends with:\n"
            f"{self.log_tail()}",
            reason="benchmark_process_failed",
        )


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit`` while inside, so cleanup code runs (main thread only)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
