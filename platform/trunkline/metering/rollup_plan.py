"""The pure part of rollups: their key and measure columns, hour buckets, and merging
tenant-hours into ranges."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

HOUR = timedelta(hours=1)

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
