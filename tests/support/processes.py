"""Run Trunkline's own processes (``trunkline …``) for integration and e2e tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

TRUNKLINE = [sys.executable, "-m", "trunkline.cli.main"]


class Proc:
    """A child process whose output goes to a log file that failures quote."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        self._handle = log.open("wb")
        self.popen = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=self._handle, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        if not self._handle.closed:
            self._handle.flush()
        return self.log.read_text(errors="replace")

    def wait_until(self, check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
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

    def wait_http(self, url: str, timeout_s: float = 60.0) -> None:
        def answers() -> bool:
            try:
                return httpx.get(url, timeout=1.0).status_code < 500
            except httpx.HTTPError:
                return False

        self.wait_until(answers, f"{url} to answer", timeout_s)

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 20.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._handle.close()
        return self.popen.returncode


def trunkline_env(**settings: str) -> dict[str, str]:
    """The environment with only the given TRUNKLINE_* settings (none inherited)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUNKLINE_")}
    env.update(settings)
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    return env
