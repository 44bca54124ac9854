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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from prometheus_client.core import Metric

__all__ = ["FamilyReport", "GaugeRule", "WorkerReport", "families_of", "merge"]

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
    reports: Iterable[WorkerReport], gauge_rules: Mapping[str, GaugeRule], *, now: float
) -> list[Metric]:
    """The workers' metrics as one: see the module's docstring. A gauge without a rule is
    summed. Families keep the order they are first seen in; ``reports`` are merged in the order
    given (sort them for a stable output)."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], Sample]] = {}
    for report in reports:
        for family in report.families:
            if family.type not in _SUMMED and not report.live:
                continue
            if family.name not in merged:
                merged[family.name] = Metric(family.name, family.documentation, family.type)
                values[family.name] = {}
            into = values[family.name]
            for name, labels, value in family.samples:
                rule = _rule_of(family, name, gauge_rules)
                value = _advanced(rule, value, now - report.written_at)
                key = (name, tuple(sorted(labels.items())))
                if (seen := into.get(key)) is not None:
                    value = _combine(rule, seen[2], value)
                into[key] = (name, labels, value)
    for name, metric in merged.items():
        for sample_name, labels, value in values[name].values():
            metric.add_sample(sample_name, labels, value)
    return list(merged.values())


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
    if rule == "sum":
        return a + b
    if rule in ("min", "youngest_age"):
        return min(a, b)
    return max(a, b)  # max, age, ongoing_age
