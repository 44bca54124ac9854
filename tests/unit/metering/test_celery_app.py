"""The Celery app of ``trunkline jobs``: each app's tasks run on its own installation."""

from __future__ import annotations

from pathlib import Path

import pytest

from trunkline.settings import DatabaseSettings, RedisSettings, Settings
from trunkline.worker import app as worker_app
from trunkline.worker.app import create_celery_app


class _Connected(Exception):
    """Raised where a job would connect to its database."""


def test_two_apps_in_one_process_each_run_their_own_installations_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery shares a task an app registers with every app made after it in the process
    (``shared=True``, its default), and keeps the first callable of a name: the second app's
    jobs ran on the first app's database (Celery warned ``DuplicateTaskNameWarning``)."""

    def make_engine(url: str) -> None:
        raise _Connected(url)

    monkeypatch.setattr(worker_app, "make_engine", make_engine)
    apps = {
        name: create_celery_app(
            Settings(
                database=DatabaseSettings(url=f"sqlite:///{tmp_path / name}.db"),
                redis=RedisSettings(url="redis://127.0.0.1:1/0", key_prefix=name),
                state_dir=tmp_path / name,
            )
        )
        for name in ("first", "second")
    }
    for name, app in apps.items():
        for job in ("metering.ingest_usage", "metering.rollup_usage", "billing.close_periods"):
            with pytest.raises(_Connected) as connected:
                app.tasks[job].run()
            assert str(connected.value) == f"sqlite:///{tmp_path / name}.db"
