"""The picture of one ``trunkline bench routing`` section: one bar panel per metric, one bar per
variant (matplotlib, from the ``bench`` extra)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["plot_section"]


def plot_section(
    runs: Mapping[str, Mapping[str, float]], metrics: Sequence[str], path: Path, *, title: str
) -> Path:
    # Imported here: matplotlib is an optional extra and slow to import.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(runs)
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(4.2 * len(metrics), 4.2), layout="constrained", squeeze=False
    )
    try:
        for ax, metric in zip(axes[0], metrics, strict=True):
            values = [runs[name].get(metric, 0.0) for name in names]
            ax.bar(range(len(names)), values, color=[f"C{i}" for i in range(len(names))])
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
            ax.set_title(metric)
            for index, value in enumerate(values):
                ax.annotate(f"{value:.3g}", (index, value), ha="center", va="bottom")
        fig.suptitle(title)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path
