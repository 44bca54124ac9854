"""The pure part of rollups: hour buckets, merging tenant-hours into ranges, and the plan that
turns freshly computed rollups into exactly the inserts, updates and deletes that differ."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

HOUR = timedelta(hours=1)

RollupKey = tuple[uuid.UUID, datetime, uuid.UUID, str, str, str, str, str, str, str]
"""(tenant_id, hour, project_id, api_key_id, model, pool, tier, region, accelerator, outcome)"""
KEY_COLUMNS = (
    "tenant_id",
    "hour",
    "project_id",
    "api_key_id",
    "model",
    "pool",
    "tier",
    "region",
    "accelerator",
    "outcome",
)
MEASURE_COLUMNS = (
    "requests",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "slo_eligible",
    "slo_met",
)


@dataclass(frozen=True, slots=True)
class Measures:
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    slo_eligible: int = 0
    slo_met: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in MEASURE_COLUMNS}


@dataclass
class RollupPlan:
    inserts: dict[RollupKey, Measures] = field(default_factory=dict)
    updates: dict[RollupKey, Measures] = field(default_factory=dict)
    deletes: list[RollupKey] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return len(self.inserts) + len(self.updates) + len(self.deletes)


def hour_of(moment: datetime) -> datetime:
    """The start of the UTC hour ``moment`` falls in."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hour_ranges(
    tenant_hours: Iterable[tuple[uuid.UUID, datetime]],
) -> list[tuple[uuid.UUID, datetime, datetime]]:
    """``(tenant, start, end)`` half-open ranges covering the given hours, consecutive hours of
    one tenant merged, so one query can select many tenant-hours with few conditions."""
    ranges: list[tuple[uuid.UUID, datetime, datetime]] = []
    for tenant, hour in sorted(set(tenant_hours)):
        if ranges and ranges[-1][0] == tenant and ranges[-1][2] == hour:
            ranges[-1] = (tenant, ranges[-1][1], hour + HOUR)
        else:
            ranges.append((tenant, hour, hour + HOUR))
    return ranges


def plan_changes(
    existing: Mapping[RollupKey, Measures], fresh: Mapping[RollupKey, Measures]
) -> RollupPlan:
    """What to write so the stored rollups of the recomputed tenant-hours equal ``fresh``;
    rows whose measures did not change are left alone."""
    plan = RollupPlan()
    for key, measures in fresh.items():
        before = existing.get(key)
        if before is None:
            plan.inserts[key] = measures
        elif before != measures:
            plan.updates[key] = measures
    plan.deletes = [key for key in existing if key not in fresh]
    return plan
