"""Merging the Prometheus metrics of a server's worker processes into one exposition, so one
scrape of any worker shows the whole server.

Each worker reports what its own registry holds (:class:`WorkerReport`); :func:`merge` combines
the reports of every worker the server has run:

- counters, histograms and summaries are summed over every report, a stopped worker's too: its
  counts stay in the totals, which therefore never go back when a worker restarts (its
  replacement starts a report of its own at zero). A ``_created`` sample takes the earliest.
- a gauge is combined over the live workers only, by its :data:`GaugeRule`: ``sum`` (what each
  worker holds: requests in flight, events held), ``min`` / ``max`` (a state every worker has
  its own view of: the worst one is what an alert needs), ``age`` (seconds since something:
  each worker's figure is advanced by the time since it wrote its report, so a worker that has
  stopped reporting looks older, not frozen; then the largest), ``youngest_age`` (the same
  advance, then the smallest: seconds since the newest of something any worker did),
  ``ongoing_age`` (seconds something has lasted, 0 while it does not: advanced only while
  nonzero, then the largest).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from prometheus_client.core import Metric

__all__ = [
    "FamilyReport",
    "GaugeRule",
    "WorkerReport",
    "exact_partials",
    "families_of",
    "merge",
    "merge_exact",
]

GaugeRule = Literal["sum", "min", "max", "age", "youngest_age", "ongoing_age"]
_SUMMED = frozenset({"counter", "histogram", "summary"})

Sample = tuple[str, dict[str, str], float]
"""(sample name, labels, value), as prometheus_client's ``Sample`` without its timestamp."""


@dataclass(frozen=True)
class FamilyReport:
    name: str
    type: str
    documentation: str
    samples: tuple[Sample, ...]


@dataclass(frozen=True)
class WorkerReport:
    """What one worker's registry held at ``written_at`` (epoch seconds)."""

    pid: int
    written_at: float
    live: bool
    """False once the worker stopped (or it was found dead): its gauges no longer count."""
    families: tuple[FamilyReport, ...]
    started: int | None = None
    """When its process started (clock ticks since boot; None where unknown): a pid alone
    may name another process once the worker is gone."""

    def stopped(self) -> WorkerReport:
        return replace(self, live=False)

    def to_json(self) -> bytes:
        families = [[f.name, f.type, f.documentation, f.samples] for f in self.families]
        body: dict[str, object] = {"pid": self.pid, "written_at": self.written_at}
        body |= {"live": self.live, "started": self.started}
        return json.dumps({**body, "families": families}).encode()  # +Inf as Infinity

    @classmethod
    def from_json(cls, data: bytes) -> WorkerReport:
        body = json.loads(data)
        families = tuple(
            FamilyReport(name, typ, doc, tuple((s, labels, v) for s, labels, v in samples))
            for name, typ, doc, samples in body["families"]
        )
        return cls(body["pid"], body["written_at"], body["live"], families, body.get("started"))


def families_of(metrics: Iterable[Metric]) -> tuple[FamilyReport, ...]:
    """A registry's collected metrics as plain data (what a worker writes down)."""
    return tuple(
        FamilyReport(
            m.name, m.type, m.documentation, tuple((s.name, s.labels, s.value) for s in m.samples)
        )
        for m in metrics
    )


def merge(
    reports: Iterable[WorkerReport],
    gauge_rules: Mapping[str, GaugeRule],
    *,
    now: float,
    scoped: Collection[str] = (),
) -> list[Metric]:
    """The workers' metrics as one: see the module's docstring. A gauge without a rule is
    summed. Families keep the order they are first seen in; ``reports`` are merged in the order
    given (sort them for a stable output). A summed sample is the correctly rounded sum of every
    value reported for it (``math.fsum``): float addition depends on its order, which folding
    dead workers changes, and a counter that went back by an ulp would read as a reset.

    ``scoped``: families whose series are those of what the workers serve now (an endpoint's):
    a stopped worker's sample of them counts only while a running worker reports its series.
    Once no running worker does (the endpoint left the configuration), it leaves the scrape
    with theirs, rather than stay forever at the stopped worker's count, lower than the total
    it was in: a counter going back, which Prometheus reads as a reset."""
    reports = list(reports)
    if scoped:
        reports = _served_only(reports, frozenset(scoped))
    merged, gathered = _gather(reports, gauge_rules, now)
    for name, metric in merged.items():
        for sample_name, labels, rule, values in gathered[name].values():
            value = math.fsum(values) if rule == "sum" else values[0]
            metric.add_sample(sample_name, labels, value)
    return list(merged.values())


def _served_only(reports: list[WorkerReport], scoped: frozenset[str]) -> list[WorkerReport]:
    """``reports`` with the stopped workers' samples of ``scoped`` families that no running
    worker reports left out."""
    served = {
        (family.name, name, tuple(sorted(labels.items())))
        for report in reports
        if report.live
        for family in report.families
        if family.name in scoped
        for name, labels, _value in family.samples
    }

    def kept(family: FamilyReport) -> FamilyReport:
        if family.name not in scoped:
            return family
        samples = tuple(
            sample
            for sample in family.samples
            if (family.name, sample[0], tuple(sorted(sample[1].items()))) in served
        )
        return replace(family, samples=samples)

    return [
        report if report.live else replace(report, families=tuple(map(kept, report.families)))
        for report in reports
    ]


def merge_exact(reports: Iterable[WorkerReport]) -> tuple[FamilyReport, ...]:
    """Stopped workers' reports as one (their gauges dropped), a summed sample's total kept
    exact: as several samples of the same name and labels, the non-overlapping partials whose
    exact sum is that of every value (:func:`exact_partials`). :func:`merge` adds them up."""
    merged, gathered = _gather((report.stopped() for report in reports), {}, 0.0)
    return tuple(
        FamilyReport(
            name,
            metric.type,
            metric.documentation,
            tuple(
                (sample_name, labels, value)
                for sample_name, labels, rule, values in gathered[name].values()
                for value in (exact_partials(values) if rule == "sum" else values)
            ),
        )
        for name, metric in merged.items()
    )


def exact_partials(values: Iterable[float]) -> list[float]:
    """Floats, increasing in magnitude and not overlapping, whose exact sum is that of
    ``values`` (Shewchuk's algorithm, what ``math.fsum`` keeps inside); ``[0.0]`` for a sum of
    zero, so the sample stays. A value that is not finite gives its ``fsum`` alone."""
    values = list(values)
    if not all(math.isfinite(v) for v in values):
        return [math.fsum(values)]
    partials: list[float] = []
    for x in values:
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            high = x + y
            low = y - (high - x)
            if low:
                partials[i] = low
                i += 1
            x = high
        partials[i:] = [x]
    return [p for p in partials if p] or [0.0]


_Gathered = tuple[str, dict[str, str], GaugeRule, list[float]]
"""(sample name, labels, rule, values): every value for ``sum``, else the one combined."""


def _gather(
    reports: Iterable[WorkerReport], gauge_rules: Mapping[str, GaugeRule], now: float
) -> tuple[dict[str, Metric], dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], _Gathered]]]:
    merged: dict[str, Metric] = {}
    gathered: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], _Gathered]] = {}
    for report in reports:
        for family in report.families:
            if family.type not in _SUMMED and not report.live:
                continue
            if family.name not in merged:
                merged[family.name] = Metric(family.name, family.documentation, family.type)
                gathered[family.name] = {}
            into = gathered[family.name]
            for name, labels, value in family.samples:
                rule = _rule_of(family, name, gauge_rules)
                value = _advanced(rule, value, now - report.written_at)
                key = (name, tuple(sorted(labels.items())))
                if (seen := into.get(key)) is None:
                    into[key] = (name, labels, rule, [value])
                elif rule == "sum":
                    seen[3].append(value)
                else:
                    seen[3][0] = _combine(rule, seen[3][0], value)
    return merged, gathered


def _rule_of(family: FamilyReport, sample: str, gauge_rules: Mapping[str, GaugeRule]) -> GaugeRule:
    if family.type in _SUMMED:
        return "min" if sample.endswith("_created") else "sum"
    return gauge_rules.get(family.name, "sum")


def _advanced(rule: GaugeRule, value: float, stale_s: float) -> float:
    """A worker's figure as of now, ``stale_s`` after it wrote its report: an age grows with
    it, an ongoing one only while it lasts (nonzero)."""
    if rule in ("age", "youngest_age") or (rule == "ongoing_age" and value):
        return value + max(stale_s, 0.0)
    return value


def _combine(rule: GaugeRule, a: float, b: float) -> float:
    if rule in ("min", "youngest_age"):
        return min(a, b)
    return max(a, b)  # max, age, ongoing_age
