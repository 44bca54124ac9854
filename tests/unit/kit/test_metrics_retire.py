"""Dead workers' metric files folded into one: the files a scrape reads stay few, and no total
goes back or counts a worker twice, whoever compacts, however many at once, wherever one dies."""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from tests.unit.kit.test_metrics_share import Worker, _gone_pid

from trunkline.kit.metrics_merge import FamilyReport, WorkerReport, families_of, merge
from trunkline.kit.metrics_retire import RETIRED, fold, locked, read_retired, sweep
from trunkline.kit.metrics_share import MetricsShare

Totals = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def gone() -> int:
    return _gone_pid()


def _worker_file(directory: Path, pid: int, served: int) -> MetricsShare:
    """A worker (process ``pid``) that served ``served`` requests, one second each, and holds
    ``served`` in flight, as its file says."""
    registry = CollectorRegistry()
    Counter("requests", "", registry=registry).inc(served)
    seconds = Histogram("seconds", "", buckets=(0.5, 2.0), registry=registry)
    for _ in range(served):
        seconds.observe(1.0)
    Gauge("in_flight", "", registry=registry).set(served)
    share = MetricsShare(directory, pid=pid)
    share.write(0, families_of(registry.collect()))
    return share


def _totals(share: MetricsShare) -> Totals:
    """What a scrape through ``share`` shows (but when series began)."""
    merged = merge(share.read().reports, {}, now=0.0)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in merged
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


def _served(totals: Totals) -> float:
    return totals[("requests_total", ())]


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def test_dead_workers_files_are_folded_into_one_and_every_total_stays(
    tmp_path: Path, gone: int
) -> None:
    live = _worker_file(tmp_path, os.getpid(), 1)
    for served in (2, 3, 4):
        _worker_file(tmp_path, gone, served)
    before = _totals(live)
    assert len(_files(tmp_path)) == 4

    assert live.compact() == 3
    after = _totals(live)
    assert _files(tmp_path) == sorted([live.path.name, RETIRED])
    assert after == before
    assert _served(after) == 10
    assert after[("seconds_bucket", (("le", "2.0"),))] == 10
    assert after[("in_flight", ())] == 1  # the dead workers' gauges do not count, as before

    _worker_file(tmp_path, gone, 5)  # another dies: added to what was folded
    assert live.compact() == 1
    assert _served(_totals(live)) == 15 and len(_files(tmp_path)) == 2


def test_a_scrape_that_meets_dead_workers_files_folds_them_for_the_next(
    tmp_path: Path, gone: int
) -> None:
    worker = Worker(tmp_path, os.getpid())
    worker.requests.inc(1)
    for served in (2, 3):
        _worker_file(tmp_path, gone, served)
    assert worker.scrape()["requests_total"] == 6
    assert _files(tmp_path) == sorted([worker.share.path.name, RETIRED])
    assert worker.scrape()["requests_total"] == 6


@pytest.mark.parametrize("compactors_are", ["threads", "processes"])
def test_compactions_racing_each_other_and_scrapes_count_every_worker_once(
    tmp_path: Path, gone: int, compactors_are: str
) -> None:
    """Workers die and compact at once (threads of this process, or processes as a gateway's
    workers are), scrapes read meanwhile: every scrape's total is what had been written by
    then, never less than the one before, and nothing is lost at the end."""
    live = _worker_file(tmp_path, os.getpid(), 1)
    compactors, rounds = 4, 30
    seen: list[list[float]] = [[], []]
    errors: list[BaseException] = []
    forked = multiprocessing.get_context("fork")
    start = forked.Barrier(compactors + len(seen))  # threads and forked processes alike

    def die_and_compact() -> None:
        start.wait()
        for _ in range(rounds):
            _worker_file(tmp_path, gone, 1)
            MetricsShare(tmp_path, pid=os.getpid()).compact(wait=True)

    def scrape(into: list[float]) -> None:
        start.wait()
        for _ in range(rounds * 2):
            into.append(_served(_totals(live)))

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:  # the test reports it
            errors.append(exc)

    runners: list[threading.Thread | multiprocessing.process.BaseProcess] = [
        threading.Thread(target=guarded, args=(die_and_compact,))
        if compactors_are == "threads"
        else forked.Process(target=die_and_compact)
        for _ in range(compactors)
    ]
    runners += [threading.Thread(target=guarded, args=(partial(scrape, s),)) for s in seen]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join()

    assert errors == []
    assert [getattr(r, "exitcode", 0) for r in runners] == [0] * len(runners)
    live.compact(wait=True)
    written = 1 + compactors * rounds
    assert _served(_totals(live)) == written
    assert len(_files(tmp_path)) == 2
    for scrapes in seen:
        assert scrapes == sorted(scrapes) and scrapes[-1] <= written, scrapes


def test_a_compaction_that_died_after_its_commit_loses_and_doubles_nothing(
    tmp_path: Path, gone: int
) -> None:
    live = _worker_file(tmp_path, os.getpid(), 1)
    dead = [_worker_file(tmp_path, gone, served) for served in (2, 3, 4)]
    before = _totals(live)
    with locked(tmp_path, exclusive=True):
        reports = {s.path.name: WorkerReport.from_json(s.path.read_bytes()) for s in dead}
        fold(tmp_path, read_retired(tmp_path), reports)  # committed
        sweep(tmp_path, [dead[0].path.name])  # one file removed of three, then it died
    assert _totals(live) == before  # the files still there are absorbed: counted once
    assert live.compact() == 0  # nothing left to fold, and what it absorbed is removed
    assert _totals(live) == before
    assert _files(tmp_path) == sorted([live.path.name, RETIRED])


def test_a_compaction_that_died_before_its_commit_changed_nothing(
    tmp_path: Path, gone: int
) -> None:
    live = _worker_file(tmp_path, os.getpid(), 1)
    dead = [_worker_file(tmp_path, gone, served) for served in (2, 3)]
    before = _totals(live)
    (tmp_path / f".{RETIRED}.tmp").write_bytes(b'{"absorbed": ["worker-')  # half-written
    assert _totals(live) == before
    assert live.compact() == len(dead)
    assert _totals(live) == before


def _seconds_report(value: float) -> WorkerReport:
    counter = (FamilyReport("busy_seconds", "counter", "", (("busy_seconds_total", {}, value),)),)
    return WorkerReport(0, 0.0, True, counter)


def _scraped_seconds(reports: list[WorkerReport]) -> float:
    (metric,) = merge(reports, {}, now=0.0)
    return sum(sample.value for sample in metric.samples)  # one sample: its value


def test_folding_dead_workers_never_makes_a_float_total_go_back(tmp_path: Path) -> None:
    # Workers whose seconds counters are floats die one or a few at a time, their files folded
    # (through retired.json); a scrape before and after each fold, with nothing counted in
    # between, must show no less: Prometheus reads a drop of one ulp as a counter reset. Each
    # worker's file name, hence where a scrape adds it, is drawn at random, as pids are.
    rng = random.Random(20261207)
    for trial in range(1500):
        directory = tmp_path / str(trial)
        directory.mkdir()
        retired = read_retired(directory)
        files = {f"worker-{rng.randrange(10**6):06d}-{i}": rng.uniform(0, 1000) for i in range(6)}
        seen = 0.0
        while files:
            names = sorted(files)
            for name in rng.sample(names, rng.randint(0, len(names) - 1)):
                files[name] += rng.uniform(0, 10)  # the live ones count on
            for fold_now in (False, True):
                if fold_now:
                    dead = {
                        n: _seconds_report(files.pop(n))
                        for n in rng.sample(names, rng.randint(1, len(names)))
                    }
                    fold(directory, retired, dead)
                    retired = read_retired(directory)
                reports = [retired.report, *(_seconds_report(files[n]) for n in sorted(files))]
                total = _scraped_seconds(reports)
                assert total >= seen, f"trial {trial}: {seen!r} -> {total!r}"
                seen = total
