"""Plots benchmarks write beside ``result.json`` (matplotlib, from the ``bench`` extra)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["plot_latency_cdf"]


def plot_latency_cdf(
    samples_ms: Mapping[str, Sequence[float]],
    path: Path,
    *,
    title: str,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """One empirical CDF line per variant on a log-scaled latency axis, saved as ``path``.

    ``labels`` names the lines in the legend (default: the variant and its sample count).
    """
    # Imported here: matplotlib is an optional extra and slow to import.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    try:
        for name, values in samples_ms.items():
            ordered = sorted(values)
            n = len(ordered)
            if n == 0:
                continue
            fractions = [(i + 1) / n for i in range(n)]
            label = (labels or {}).get(name, f"{name} (n={n})")
            ax.step(ordered, fractions, where="post", label=label)
        ax.set_xscale("log")
        # Label 1-2-5 steps in plain numbers: latencies span little more than a decade.
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("latency per request (ms, log scale)")
        ax.set_ylabel("fraction of requests at or below")
        ax.set_ylim(0.0, 1.0)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
        ax.set_title(title)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path
