"""The picture of ``trunkline bench admission``: per-tier TTFT attainment and gold's p99 TTFT
against the offered load, FIFO and admission side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trunkline.bench.report import Runs

__all__ = ["plot_admission"]

_COLORS = {"gold": "goldenrod", "silver": "slategray", "bronze": "sienna"}


def plot_admission(runs: Runs, loads: Sequence[float], path: Path, *, title: str) -> Path:
    # Imported here: matplotlib is an optional extra and slow to import.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (share, gold) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    try:
        for variant, style in (("fifo", "--"), ("admission", "-")):
            metrics = runs[variant]
            for tier, color in _COLORS.items():
                values = [metrics.get(f"{tier}_ttft_attainment@{x:g}x") for x in loads]
                points = [(x, v) for x, v in zip(loads, values, strict=True) if v is not None]
                share.plot(*zip(*points, strict=True), style, color=color, marker="o",
                           label=f"{tier}, {variant}")  # fmt: skip
            p99 = [(x, metrics.get(f"gold_ttft_p99_s@{x:g}x")) for x in loads]
            points = [(x, v * 1000) for x, v in p99 if v is not None]
            gold.plot(
                *zip(*points, strict=True), style, color="goldenrod", marker="o", label=variant
            )
        share.set_xlabel("offered load (x measured capacity)")
        share.set_ylabel("requests within their tier's TTFT SLO")
        share.set_ylim(0, 1.05)
        share.legend(fontsize=7, ncol=2)
        share.grid(True, alpha=0.3)
        gold.axhline(500, color="black", linewidth=1, label="gold SLO (500 ms)")
        gold.set_yscale("log")
        gold.set_xlabel("offered load (x measured capacity)")
        gold.set_ylabel("gold p99 TTFT (ms, log scale)")
        gold.legend()
        gold.grid(True, which="both", alpha=0.3)
        fig.suptitle(title)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path
