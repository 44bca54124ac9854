"""The workers of one server (uvicorn ``--workers N``) sharing their Prometheus metrics through a
directory, so a scrape of whichever worker accepts it shows the whole server
(:mod:`trunkline.kit.metrics_merge` says how they add up).

Each worker writes what its registry holds to a file of its own, every ``every_s`` and whenever
it serves a scrape; a scrape merges every file. The request path keeps its in-memory metrics
and pays nothing: the cost is a collection of the registry a second (prometheus_client's
multiprocess mode instead writes to a file at every observation, and leaves out the collectors
that read state at scrape time, which most of a gateway's are). Another worker's figures are at
most ``every_s`` old; a worker killed outright loses what it counted after its last write.
The files of workers that are gone are folded into one (:mod:`trunkline.kit.metrics_retire`)
by the next worker to start or to serve a scrape that met them, so a worker restarting again
and again does not leave a file per restart for every scrape to read.

The directory must start empty at each start of the server (old files would be summed): the
parent process makes it (:func:`workers_metrics_dir`) and hands it to its workers in the
environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from trunkline.errors import ConfigurationError
from trunkline.kit.metrics_merge import FamilyReport, GaugeRule, WorkerReport, families_of, merge
from trunkline.kit.metrics_retire import Retired, fold, locked, read_retired, replace_file, sweep

__all__ = [
    "EXPOSITION_TYPE",
    "WORKERS_METRICS_DIR_ENV",
    "MetricsShare",
    "SharedMetrics",
    "workers_metrics_dir",
]

EXPOSITION_TYPE = CONTENT_TYPE_LATEST.removesuffix("; charset=utf-8")
"""A ``/metrics`` page's media type for a Litestar ``Response``, which adds the charset to a
text type itself (given prometheus_client's, the header said it twice)."""

log = logging.getLogger(__name__)

WORKERS_METRICS_DIR_ENV = "TRUNKLINE_WORKERS_METRICS_DIR"
"""Set by the parent process for the workers it starts; not a setting (one inherited from the
environment is replaced or removed)."""


@contextlib.contextmanager
def workers_metrics_dir(workers: int) -> Iterator[Path | None]:
    """A fresh directory for ``workers`` processes to share their metrics through, named in
    the environment they inherit, removed with all it holds after the block (a parent killed
    outright leaves it); None, and nothing made, for one worker."""
    os.environ.pop(WORKERS_METRICS_DIR_ENV, None)
    if workers <= 1:
        yield None
        return
    try:
        path = Path(tempfile.mkdtemp(prefix="trunkline-metrics-"))
    except OSError as exc:  # a read-only file system: say what to set, not a traceback
        raise ConfigurationError(
            f"{workers} workers share their metrics through a directory, which cannot be made "
            f"in {tempfile.gettempdir()} ({exc.strerror}): set TMPDIR to a writable directory"
        ) from None
    os.environ[WORKERS_METRICS_DIR_ENV] = str(path)
    try:
        yield path
    finally:
        os.environ.pop(WORKERS_METRICS_DIR_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


class MetricsShare:
    """One worker's files in the shared directory: what it writes, and what it reads of all."""

    def __init__(self, directory: Path, *, pid: int | None = None) -> None:
        self.directory = directory
        self.pid = os.getpid() if pid is None else pid
        self.started = process_start(self.pid)
        # A pid can be reused by a later worker: the file names its start too.
        self.path = directory / f"worker-{self.pid}-{time.time_ns()}.json"
        self._lock = threading.Lock()
        self._written = -1

    def write(self, seq: int, families: tuple[FamilyReport, ...], *, live: bool = True) -> None:
        """Replace this worker's file with collection number ``seq``, unless a later one is
        there already (two writes racing must not put an older count over a newer)."""
        report = WorkerReport(self.pid, time.time(), live, families, self.started)
        with self._lock:
            if seq <= self._written:
                return
            replace_file(self.path, report.to_json())
            self._written = seq

    def read(self) -> Reading:
        """Every worker's report, the dead ones' folded so far first, then by file name; one
        whose process is gone counts as stopped."""
        with locked(self.directory, exclusive=False):
            retired = read_retired(self.directory)
            reports = [retired.report] if retired.report.families else []
            dead = 0
            for _path, report in self._workers(retired):
                if not _running(report.pid, report.started):
                    report, dead = report.stopped(), dead + 1
                reports.append(report)
        return Reading(reports, dead)

    def compact(self, *, wait: bool = False, earlier_of_this_pid: bool = False) -> int:
        """Fold the files of workers whose process is gone into the retired one
        (:mod:`trunkline.kit.metrics_retire`); with ``earlier_of_this_pid``, also those of
        earlier workers that had this pid (one died without saying so: where start times are
        unknown, the pid in use again would keep its gauges counted). Without ``wait``, nothing
        if another holds the lock. Returns how many it folded."""
        with locked(self.directory, exclusive=True, wait=wait) as held:
            if not held:
                return 0
            retired = read_retired(self.directory)
            dead = {
                path.name: report
                for path, report in self._workers(retired)
                if path != self.path
                and (
                    not _running(report.pid, report.started)
                    or (earlier_of_this_pid and report.pid == self.pid)
                )
            }
            if dead:
                retired = fold(self.directory, retired, dead)
            sweep(self.directory, retired.absorbed)
        return len(dead)

    def _workers(self, retired: Retired) -> Iterator[tuple[Path, WorkerReport]]:
        """The workers' files and reports, by file name, but those already folded."""
        for path in sorted(self.directory.glob("worker-*.json")):
            if path.name not in retired.absorbed:
                yield path, WorkerReport.from_json(path.read_bytes())


@dataclass(frozen=True)
class Reading:
    reports: list[WorkerReport]
    dead: int
    """Files of workers whose process is gone, not yet folded into the retired one."""


def _running(pid: int, started: int | None) -> bool:
    """Whether the process ``pid`` that started at ``started`` still runs (not another
    process that was given its pid since)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return started is None or process_start(pid) in (started, None)


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux's ``/proc``; None
    elsewhere, or if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may hold anything: the
    # start time is the 22nd field of the line, the 20th after the name.
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


class _Collected(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self._metrics


class SharedMetrics:
    """A worker's ``registry`` shared through ``share``: :meth:`start` it with the app,
    :meth:`close` it when the app stops, and answer scrapes with :meth:`exposition`.
    ``gauge_rules`` and ``scoped`` as :func:`~trunkline.kit.metrics_merge.merge` takes them."""

    def __init__(
        self,
        registry: CollectorRegistry,
        share: MetricsShare,
        gauge_rules: Mapping[str, GaugeRule],
        *,
        scoped: Collection[str] = (),
        every_s: float = 1.0,
    ) -> None:
        self._registry = registry
        self._share = share
        self._rules = gauge_rules
        self._scoped = scoped
        self._every_s = every_s
        self._seq = itertools.count()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Earlier workers' files are folded before this one's first is there to be read.
        await asyncio.to_thread(self._share.compact, wait=True, earlier_of_this_pid=True)
        await self._publish()
        self._task = asyncio.create_task(self._keep_publishing())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._publish(live=False)

    async def exposition(self) -> bytes:
        """The text exposition of every worker's metrics, this one's as of now."""
        seq, families = self._collect()
        return await asyncio.to_thread(self._merged, seq, families)

    def _collect(self) -> tuple[int, tuple[FamilyReport, ...]]:
        # On the event loop: collectors read state that only the loop changes.
        return next(self._seq), families_of(self._registry.collect())

    def _merged(self, seq: int, families: tuple[FamilyReport, ...]) -> bytes:
        # Written before reading: a scrape then shows nothing another scrape, of another
        # worker, might not show after it, and counters never seem to go back.
        self._share.write(seq, families)
        reading = self._share.read()
        merged = merge(reading.reports, self._rules, now=time.time(), scoped=self._scoped)
        if reading.dead:  # for the next scrape; one is enough if several workers see them
            self._share.compact()
        return generate_latest(_Collected(merged))

    async def _publish(self, *, live: bool = True) -> None:
        seq, families = self._collect()
        await asyncio.to_thread(self._share.write, seq, families, live=live)

    async def _keep_publishing(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            try:
                await self._publish()
            except OSError as exc:  # a full disk: the next write may succeed
                log.warning("could not share this worker's metrics (%s)", exc)
