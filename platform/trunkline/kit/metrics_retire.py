"""Folding the metric files of a server's dead workers into one, so a scrape merges as many
files as there are running workers, plus one, however often workers die and are replaced
(:mod:`trunkline.kit.metrics_share` says who reads and writes the files).

A dead worker's counters, histograms and summaries are added to the retired file's (its
gauges are dropped, as a scrape drops them); its own file is then removed. A sum is kept exact,
as the partials :func:`~trunkline.kit.metrics_merge.exact_partials` gives (several samples of
one name and labels, which a merge adds up with the rest): one rounded float would add up in
another order than before the fold, and a float total could go back by an ulp, which
Prometheus reads as a counter reset. A retired file of one sample per name and labels reads
the same way. Totals never go back
and never count a worker twice, even with several workers compacting at once, scrapes reading
meanwhile, or a worker dying half-way:

- compacting takes the directory's lock exclusively (``flock`` on ``.lock``) and a scrape's
  read takes it shared, so no read sees a fold half-done and no two folds interleave;
- a fold commits by renaming its new retired file over the old one; that file names every
  worker file it absorbed, and a read skips those, so a worker file left behind by a compaction
  that died after its commit counts once, and the next compaction removes it. A compaction that
  died before its commit changed nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from trunkline.kit.metrics_merge import WorkerReport, merge_exact

__all__ = ["RETIRED", "Retired", "fold", "locked", "read_retired", "replace_file", "sweep"]

RETIRED = "retired.json"
_LOCK = ".lock"


@dataclass(frozen=True)
class Retired:
    """What every dead worker folded so far counted, and the names of their files."""

    report: WorkerReport
    absorbed: frozenset[str]

    def to_json(self) -> bytes:
        body = json.loads(self.report.to_json())
        return json.dumps({"absorbed": sorted(self.absorbed), "report": body}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Retired:
        body = json.loads(data)
        report = WorkerReport.from_json(json.dumps(body["report"]).encode())
        return cls(report, frozenset(body["absorbed"]))


_NOTHING = Retired(WorkerReport(0, 0.0, False, ()), frozenset())


def read_retired(directory: Path) -> Retired:
    try:
        return Retired.from_json((directory / RETIRED).read_bytes())
    except FileNotFoundError:
        return _NOTHING


@contextlib.contextmanager
def locked(directory: Path, *, exclusive: bool, wait: bool = True) -> Iterator[bool]:
    """Hold the directory's lock (shared or exclusive) for the block; yields False, holding
    nothing, if ``wait`` is off and another holds it. Released when the block ends or the
    process dies."""
    fd = os.open(directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        operation = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, operation if wait else operation | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            held = False
        yield held
    finally:
        os.close(fd)


def fold(directory: Path, retired: Retired, dead: Mapping[str, WorkerReport]) -> Retired:
    """Commit ``retired`` with the ``dead`` workers' reports (by file name) added; hold the
    lock exclusively. Names it absorbed whose files are gone are forgotten: no read can meet
    them again."""
    families = merge_exact([retired.report, *dead.values()])  # gauges of stopped: dropped
    kept = {name for name in retired.absorbed if (directory / name).exists()}
    folded = Retired(WorkerReport(0, time.time(), False, families), frozenset(kept | dead.keys()))
    replace_file(directory / RETIRED, folded.to_json())
    return folded


def sweep(directory: Path, names: Iterable[str]) -> None:
    """Remove absorbed workers' files (and any temporary file a worker killed mid-write left);
    hold the lock exclusively."""
    for name in names:
        (directory / name).unlink(missing_ok=True)
        (directory / f".{name}.tmp").unlink(missing_ok=True)


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never a part."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
