"""Workers sharing their metrics through a directory: a scrape of one shows them all."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.parser import text_string_to_metric_families

from trunkline.errors import ConfigurationError
from trunkline.kit.metrics_merge import families_of
from trunkline.kit.metrics_share import (
    WORKERS_METRICS_DIR_ENV,
    MetricsShare,
    SharedMetrics,
    workers_metrics_dir,
)


class Worker:
    """A registry with a request counter and an in-flight gauge, shared as process ``pid``."""

    def __init__(self, directory: Path, pid: int) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("requests", "requests", registry=self.registry)
        self.in_flight = Gauge("in_flight", "in flight", registry=self.registry)
        self.share = MetricsShare(directory, pid=pid)
        self.shared = SharedMetrics(self.registry, self.share, {"in_flight": "sum"}, every_s=60)

    def scrape(self) -> dict[str, float]:
        text = asyncio.run(self.shared.exposition()).decode()
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if not sample.name.endswith("_created")
        }


def _gone_pid() -> int:
    """The pid of a process that has exited."""
    program = [sys.executable, "-c", "import os; print(os.getpid())"]
    return int(subprocess.run(program, check=True, capture_output=True).stdout)


def test_a_scrape_of_either_worker_shows_both(tmp_path: Path) -> None:
    # Two running processes' pids: this one's and its parent's.
    a, b = Worker(tmp_path, os.getpid()), Worker(tmp_path, os.getppid())
    a.requests.inc(3)
    a.in_flight.set(1)
    b.requests.inc(4)
    b.in_flight.set(2)
    asyncio.run(b.shared.start())  # b shares what it has when it starts, then every_s
    assert a.scrape() == {"requests_total": 7.0, "in_flight": 3.0}
    a.requests.inc()
    assert b.scrape()["requests_total"] == 7.0  # a has not shared its new count yet
    assert a.scrape()["requests_total"] == 8.0  # it does at each scrape (and every_s)
    assert b.scrape()["requests_total"] == 8.0

    b.requests.inc(2)
    asyncio.run(b.shared.close())  # a worker stopping says so, with its last counts
    assert a.scrape() == {"requests_total": 10.0, "in_flight": 1.0}


def _stopped_for_gauges(tmp_path: Path, gone: MetricsShare) -> None:
    """``gone`` wrote counts and a gauge: the counts stay in a scrape, the gauge does not."""
    registry = CollectorRegistry()
    Counter("requests", "requests", registry=registry).inc(5)
    Gauge("in_flight", "in flight", registry=registry).set(9)
    gone.write(0, families_of(registry.collect()))
    alive = Worker(tmp_path, os.getpid())
    alive.in_flight.set(1)
    assert alive.scrape() == {"requests_total": 5.0, "in_flight": 1.0}


def test_a_worker_whose_pid_another_process_took_counts_as_stopped(tmp_path: Path) -> None:
    """Its pid alone said it ran while any process had it: its gauges kept counting."""
    gone = MetricsShare(tmp_path, pid=os.getppid())  # a pid in use, by another process
    assert gone.started is not None, "Linux: /proc gives when a process started"
    gone.started -= 1  # the worker that wrote this had the pid before it
    _stopped_for_gauges(tmp_path, gone)


def test_a_worker_that_died_keeps_its_counts_but_not_its_gauges(tmp_path: Path) -> None:
    _stopped_for_gauges(tmp_path, MetricsShare(tmp_path, pid=_gone_pid()))


def test_an_older_collection_never_overwrites_a_newer_one(tmp_path: Path) -> None:
    worker = Worker(tmp_path, os.getpid())
    worker.requests.inc(2)
    newer = families_of(worker.registry.collect())
    worker.share.write(5, newer)
    worker.share.write(4, families_of(CollectorRegistry().collect()))  # raced and lost
    [report] = worker.share.read().reports
    assert report.families == newer


def test_a_new_worker_with_a_dead_ones_pid_retires_its_file(tmp_path: Path) -> None:
    earlier = Worker(tmp_path, os.getpid())
    earlier.requests.inc(2)
    earlier.in_flight.set(7)
    asyncio.run(earlier.shared.start())  # then killed: its file still says live
    later = Worker(tmp_path, os.getpid())
    asyncio.run(later.shared.start())
    assert later.scrape() == {"requests_total": 2.0, "in_flight": 0.0}


def test_the_directory_is_made_fresh_for_several_workers_and_removed_after() -> None:
    os.environ[WORKERS_METRICS_DIR_ENV] = "/somewhere/stale"
    with workers_metrics_dir(1) as none:
        assert none is None and WORKERS_METRICS_DIR_ENV not in os.environ
    with workers_metrics_dir(2) as path:
        assert path is not None and list(path.iterdir()) == []
        assert os.environ[WORKERS_METRICS_DIR_ENV] == str(path)  # what the workers inherit
        (path / "worker-1-1.json").write_text("{}")
    assert not path.exists() and WORKERS_METRICS_DIR_ENV not in os.environ


def test_a_temporary_directory_that_cannot_be_used_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_directory))  # documented: TMPDIR's place
    with pytest.raises(ConfigurationError, match="set TMPDIR"), workers_metrics_dir(2):
        pass
