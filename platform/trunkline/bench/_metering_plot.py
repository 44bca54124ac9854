"""The plot of ``trunkline bench metering`` (matplotlib, imported only when plotting)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from trunkline.bench.report import Runs


def plot_ingest(path: Path, runs: Runs, curves: dict[str, list[tuple[float, int]]]) -> None:
    """Ingest progress of each variant over time, and their end-to-end rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, curve in curves.items():
        left.plot([t for t, _c in curve], [c for _t, c in curve], marker=".", label=name)
    left.set_xlabel("seconds since the first event")
    left.set_ylabel("events in the ledger")
    left.set_title("ingest progress")
    left.legend()
    names = list(runs)
    rates = [runs[name]["events_per_s"] for name in names]
    right.bar(names, rates, color=["#999999", "#2b7bba"])
    for index, rate in enumerate(rates):
        right.text(index, rate, f"{rate:,.0f}/s", ha="center", va="bottom")
    right.set_ylabel("events per second, end to end")
    right.set_title("usage ingest on real PostgreSQL + Redis")
    figure.suptitle(f"trunkline bench metering ({datetime.now(UTC):%Y-%m-%d})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
