"""Run Trunkline's own processes (``trunkline …``) for integration and e2e tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx

from trunkline.bench.processes import LoggedProcess

TRUNKLINE = [sys.executable, "-m", "trunkline.cli.main"]
SOURCE = Path(__file__).resolve().parents[2] / "platform"
"""The code under test, which children import first: the venv's editable install may be
another checkout's (a git worktree sharing its venv), whose code they ran instead."""


class Proc(LoggedProcess):
    """A child process whose output goes to a log file that failures quote; ``stop`` sends
    SIGINT, then SIGKILL after 20 s."""

    def wait_http(self, url: str, timeout_s: float = 60.0) -> None:
        def answers() -> bool:
            try:
                return httpx.get(url, timeout=1.0).status_code < 500
            except httpx.HTTPError:
                return False

        self.wait_until(answers, f"{url} to answer", timeout_s)


def trunkline_env(**settings: str) -> dict[str, str]:
    """The environment with only the given TRUNKLINE_* settings (none inherited)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUNKLINE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE), env.get("PYTHONPATH")]))
    env.update(settings)
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    return env
