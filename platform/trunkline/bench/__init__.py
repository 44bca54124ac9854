"""Benchmarks: ``trunkline bench NAME --out DIR`` commands and the pieces they share.

- :mod:`~trunkline.bench.report` — the one ``result.json`` shape (runs, ratios against the
  baseline, goals measured from the runs) and the printed side-by-side table;
- :mod:`~trunkline.bench.stats` — latency summaries;
- :mod:`~trunkline.bench.timing` — interleaved timing of variants;
- :mod:`~trunkline.bench.processes` — servers in processes of their own, always stopped;
- :mod:`~trunkline.bench.plot` — plots (matplotlib, imported only when plotting);
- :mod:`~trunkline.bench.overhead` — the gateway's added latency over a direct engine call.

The report API is re-exported here; importing the package starts nothing and loads no
benchmark.
"""

from trunkline.bench.report import (
    BenchResult,
    Goal,
    GoalSpec,
    Metrics,
    Runs,
    evaluate_goals,
    print_table,
    ratios,
    write_result,
)

__all__ = [
    "BenchResult",
    "Goal",
    "GoalSpec",
    "Metrics",
    "Runs",
    "evaluate_goals",
    "print_table",
    "ratios",
    "write_result",
]
