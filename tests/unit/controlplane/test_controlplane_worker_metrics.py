"""How ``trunkline controlplane --workers N`` adds up its workers' snapshot gauges on one
scrape: the newest version stored and its age, out of sync while any worker's check fails and
for how long, a worker that stopped reporting (its event loop blocked) not frozen in time."""

from __future__ import annotations

from trunkline.apps.controlplane_metrics import GAUGE_RULES
from trunkline.kit.metrics_merge import FamilyReport, WorkerReport, merge

NOW = 10_000.0
STALE_S = 600.0


def report(pid: int, written_at: float, **gauges: float) -> WorkerReport:
    families = tuple(
        FamilyReport(
            f"trunkline_snapshot_{name}", "gauge", "", ((f"trunkline_snapshot_{name}", {}, value),)
        )
        for name, value in gauges.items()
    )
    return WorkerReport(pid, written_at, True, families)


def merged(*reports: WorkerReport) -> dict[str, float]:
    return {m.name: m.samples[0].value for m in merge(reports, GAUGE_RULES, now=NOW)}


def test_a_stalled_workers_ages_go_on_growing() -> None:
    # Worker 1 stored version 12 5 s before its last report, then its loop blocked (no report
    # for 600 s) while its check was failing; worker 2 reports now, in sync, its store older.
    stalled = report(
        1, NOW - STALE_S, published_version=12, published_age_seconds=5,
        in_sync=0, sync_failing_seconds=30,
    )  # fmt: skip
    current = report(
        2, NOW, published_version=10, published_age_seconds=900,
        in_sync=1, sync_failing_seconds=0,
    )  # fmt: skip
    assert merged(stalled, current) == {
        "trunkline_snapshot_published_version": 12,
        "trunkline_snapshot_published_age_seconds": 5 + STALE_S,  # not 5 s for ever
        "trunkline_snapshot_in_sync": 0,
        "trunkline_snapshot_sync_failing_seconds": 30 + STALE_S,  # still failing, not for 30 s
    }

    # Once it is in sync again (0 s failing), its failing seconds do not grow while it stalls.
    recovered = report(1, NOW - STALE_S, in_sync=1, sync_failing_seconds=0)
    assert merged(recovered)["trunkline_snapshot_sync_failing_seconds"] == 0
