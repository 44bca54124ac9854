"""The pictures of ``trunkline bench fleet`` (TTFT CDF and throughput per policy) and
``trunkline bench fidelity`` (simulated vs real vLLM)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_fleet"]


def plot_fleet(
    ttft_s: Mapping[str, Sequence[float]],
    runs: Mapping[str, Mapping[str, float]],
    path: Path,
    *,
    title: str,
) -> Path:
    """Left: empirical CDF of TTFT per policy (log scale). Right: output tokens/s per policy."""
    # Imported here: matplotlib is an optional extra and slow to import.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, bars) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    try:
        _ttft_cdf(cdf, ttft_s)
        names = list(runs)
        values = [runs[name].get("output_tokens_per_s", 0.0) for name in names]
        bars.bar(names, values, color=[f"C{i}" for i in range(len(names))])
        bars.set_ylabel("output tokens / s")
        bars.set_title("throughput")
        for index, value in enumerate(values):
            bars.annotate(f"{value:,.0f}", (index, value), ha="center", va="bottom")
        fig.suptitle(title)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def plot_fidelity(
    ttft_s: Mapping[str, Sequence[float]],
    runs: Mapping[str, Mapping[str, float]],
    path: Path,
) -> Path:
    """Left: TTFT CDF, real vs simulated, over the held-out loads. Right: simulated / real per
    load and metric (1.0 is perfect)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, ratios) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    try:
        _ttft_cdf(cdf, ttft_s)
        real, sim = runs["real-vllm"], runs["simulator"]
        keys = [k for k in real if not k.startswith("ranking") and real[k] > 0 and k in sim]
        ratios.barh(range(len(keys)), [sim[k] / real[k] for k in keys])
        ratios.set_yticks(range(len(keys)), keys, fontsize=7)
        ratios.axvline(1.0, color="black", linewidth=1)
        ratios.set_xlabel("simulated / real")
        fig.suptitle("engine simulator vs real vLLM (CPU), held-out loads")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def _ttft_cdf(axes: Any, ttft_s: Mapping[str, Sequence[float]]) -> None:
    """One empirical CDF of TTFT per series, on a log axis labelled in plain milliseconds."""
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

    for name, values in ttft_s.items():
        ordered = sorted(v * 1000 for v in values if v > 0)
        if ordered:
            fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
            axes.step(ordered, fractions, where="post", label=f"{name} (n={len(ordered)})")
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("time to first token (ms, log scale)")
    axes.set_ylabel("fraction of requests at or below")
    axes.set_ylim(0.0, 1.0)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right")
