"""Sections of ``trunkline bench routing`` whose measurement lives in another benchmark module:
model cascading (:func:`trunkline.bench.cascade.run_cascade_bench`) and the routing decision
microbenchmark (:func:`trunkline.bench.routing_decision.run_decision_bench`).

Each returns a dict; a dict in the result-file shape (``runs``, ``goals``, ``simulated``) is
taken over as it is. When the module is not there, the section says so instead of failing
the whole run.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any

from trunkline.bench._routing_common import RoutingBenchConfig, Section, SimRunner, goal
from trunkline.bench.report import Runs

__all__ = ["EXTERNAL", "external_section", "section_from_dict"]

EXTERNAL: dict[str, tuple[str, str, str]] = {
    "cascade": ("trunkline.bench.cascade", "run_cascade_bench", "model cascading"),
    "decision": (
        "trunkline.bench.routing_decision",
        "run_decision_bench",
        "routing decision time (microbenchmark)",
    ),
}


def external_section(name: str, config: RoutingBenchConfig, sim: SimRunner) -> Section:
    module_name, function, title = EXTERNAL[name]
    try:
        run: Callable[..., Mapping[str, Any]] = getattr(
            importlib.import_module(module_name), function
        )
    except (ImportError, AttributeError) as exc:
        sim.say(f"{name}: {module_name}.{function} is not importable ({exc}); section left out")
        return Section(
            name=name,
            title=title,
            runs={},
            goals=[],
            rows=[],
            notes=[f"not run: {module_name}.{function} is not importable ({exc})"],
        )
    sim.say(f"{name}: running {module_name}.{function} ...")
    return section_from_dict(name, title, dict(run()))


def section_from_dict(name: str, title: str, data: Mapping[str, Any]) -> Section:
    """A section from another benchmark's result-file dict: its runs' numbers, and its goals
    with the values that benchmark measured (computed from its own runs, by its own code)."""
    runs: Runs = {
        str(variant): {
            str(k): float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        for variant, metrics in dict(data.get("runs", {})).items()
        if isinstance(metrics, Mapping)
    }
    goals = []
    for item in data.get("goals", []):
        value = item.get("value")
        reported = float(value) if isinstance(value, int | float) else math.nan
        goals.append(goal(str(item["name"]), str(item["target"]), _constant(reported)))
    rows = list(dict.fromkeys(k for metrics in runs.values() for k in metrics))
    return Section(
        name=name,
        title=title,
        runs=runs,
        goals=goals,
        rows=rows,
        inputs=dict(data.get("inputs", {})),
        simulated=bool(data.get("simulated", True)),
        plot_metrics=rows[:3],
    )


def _constant(value: float) -> Callable[[Runs], float]:
    return lambda _runs: value
