"""``trunkline bench fidelity``: the engine simulator against real vLLM on this machine's CPU.

Real vLLM serves ``fidelity-llama`` (8 layers x 768, built by ``scripts/vllm-env.sh``): a decode
step takes ≈20 ms on one core, so the engine, not vLLM's API server or the load generator,
decides what a client measures. The engine's threads run on core 1
(``VLLM_CPU_OMP_THREADS_BIND``); this process and vLLM's API server on core 0.

1. **Calibrate** on one vLLM server: lone requests of several prompt lengths (TTFT) and batches
   decoding together (inter-token latency), each the median of :data:`REPEATS` runs, give a
   first fit (:func:`trunkline.engines.calibration.fit_profile`); three Poisson loads then
   refine it (:func:`~trunkline.engines.calibration.refine_profile`).
2. **Held-out loads** the calibration never saw — other rates, prompt lengths and shared-prefix
   shares — go to real vLLM, then the same requests at the same send times go to the simulator.
   Per load: median TTFT (as the client sees it), mean inter-token latency (vLLM's own histogram,
   free of the chunk bunching of a busy API server) and output throughput; the goals are the
   median errors over the loads. ``simulator-isolated-fit`` shows the first fit alone.
3. **Policy ranking**: two vLLM replicas (one core each) and two simulated ones serve requests
   opening with one of eight long system prompts, under round-robin and prefix-aware routing
   (the gateway's policy objects); the ranking by mean TTFT must agree, and be a ranking. Each
   policy's run has its own tokens, so the second finds nothing of the first cached.

Real vLLM comes from the test fixture's launcher (:mod:`trunkline.bench._fidelity_host`): run it
from a checkout after ``make vllm-env``. Times are wall-clock on a shared 2-core machine; the
load average is recorded with the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from trunkline.bench._fidelity_host import (
    FIDELITY_MODEL,
    FidelityEnv,
    fidelity_env,
    load_average,
    pinned,
)
from trunkline.bench.report import BenchResult, GoalSpec, Runs, print_table, write_result
from trunkline.cli.arguments import output_dir
from trunkline.engines.calibration import REFINED_FIELDS as STEP_FIELDS

if TYPE_CHECKING:
    from trunkline.bench._engine_side import CpuTimes
    from trunkline.bench._fidelity_record import Recording
    from trunkline.bench._fidelity_replay import RealRun, SimSide
    from trunkline.engines.profiles import AcceleratorProfile
    from trunkline.workloads import WorkloadRequest

__all__ = ["HELD_OUT", "register", "run_fidelity"]

PREFILL_LENGTHS = (16, 256, 512, 1024, 1536)
DECODE_BATCHES = (1, 2, 4, 8, 16, 32)
REPEATS = 3
"""Runs per calibration point; the median counts."""
ENGINE_CPU, CLIENT_CPUS = "1", frozenset({0})
REFINED_ON = ("ttft_p50_s", "engine_ttft_mean_s", "itl_mean_s")
"""What the refinement matches on the calibration loads (log error, summed)."""
REFINED_FIELDS = (*STEP_FIELDS, "frontend_latency_s")
"""What it moves: the step costs, and the API server's delay, which grows with load (engine-side
TTFT and ITL hold the step costs apart from it)."""
POLICIES = ("round-robin", "prefix-aware")
ENGINE_DESCRIPTION = (
    f"vllm-cpu 0.32.0, {FIDELITY_MODEL} (8 x 768 Llama, scripts/vllm-env.sh); "
    f"engine threads on core {ENGINE_CPU}, API server and load generator on core 0; "
    "ranking: one engine core per replica"
)
# Loads: :class:`trunkline.fleet.replay.Load` — name, Poisson rate, requests, prompt, shared-prefix
# and output tokens[, long share, every n-th long, long output, shared prefixes].
# Each keeps a quiet engine ≤ ≈35 % busy (a prefill token costs ≈0.8 ms, a decode step ≈20 ms),
# so a core shared with other work slows it without tipping it into saturation.
HELD_OUT: tuple[tuple[Any, ...], ...] = (
    ("poisson-1rps-p256", 1.0, 30, 256, 0, 32),
    ("poisson-2rps-p512-shared75", 2.0, 50, 512, 384, 32),
    ("poisson-3rps-p128", 3.0, 60, 128, 0, 48),
    ("poisson-0.6rps-p1536-shared50", 0.6, 15, 1536, 768, 16),
)
# Eight 960-token system prompts, each request one of them and its own 64 tokens: prefix-aware
# routing prefills each prompt once, round-robin once per replica. (Round-robin against
# least-loaded on alternating long and short prompts, the ranking before, put them within a few
# per cent of each other in the simulator: least-loaded counts requests, not tokens.)
RANKING: tuple[Any, ...] = ("prefixes-1rps-8x960", 1.0, 32, 1024, 960, 16, 0.0, 0, 8, 8)
CALIBRATION_LOADS: tuple[tuple[Any, ...], ...] = (
    ("cal-poisson-1rps-p384", 1.0, 30, 384, 0, 32),
    ("cal-poisson-3rps-p192-shared50", 3.0, 60, 192, 96, 32),
    ("cal-poisson-0.4rps-p1024", 0.4, 14, 1024, 0, 16),
)


def _requests(spec: Sequence[Any], seed: int, content: str = "") -> list[WorkloadRequest]:
    from trunkline.fleet.replay import Load, build_requests

    return build_requests(dataclasses.replace(Load(*spec), content=content), seed)


def _measure(
    servers: Sequence[Any], requests: list[WorkloadRequest], policy: str = "round-robin"
) -> RealRun:
    from trunkline.bench._fidelity_replay import measure

    return measure(servers, requests, policy, [int(s.cpu) for s in servers])


def _record(env: FidelityEnv, logs: Path, seed: int, progress: TextIO) -> Recording:
    """Everything measured on real vLLM: lone requests, every load, the ranking runs."""
    from trunkline.bench import vllm_server
    from trunkline.bench._fidelity_record import Recording

    runs: dict[str, RealRun] = {}
    loads = {"start": load_average()}
    # vLLM's API server inherits this process's core; its engine threads bind to ENGINE_CPU.
    with pinned(CLIENT_CPUS):
        server = vllm_server.start_vllm(logs, ENGINE_CPU, env=env)
        try:
            _measure([server], _requests(("warmup", 2.0, 10, 256, 0, 16), seed))
            prefill, decode, api_server, isolated_cpu = _isolated_points(server, seed, progress)
            for kind, specs in (("calibration", CALIBRATION_LOADS), ("held-out", HELD_OUT)):
                for spec in specs:
                    runs[spec[0]] = _measure([server], _requests(spec, seed))
                    print(f"fidelity: {kind} load {spec[0]}: "
                          f"{_brief(runs[spec[0]].summary())}", file=progress)  # fmt: skip
        finally:
            server.stop()
    loads["held_out"] = load_average()
    replicas = vllm_server.start_vllm_replicas(logs, ["0", "1"], env=env)
    try:
        for policy in POLICIES:
            # Its own tokens per policy: the second run finds nothing of the first cached.
            requests = _requests(RANKING, seed, content=policy)
            runs[f"ranking.{policy}"] = _measure(replicas, requests, policy)
            print(f"fidelity: ranking load under {policy} done", file=progress)
    finally:
        for replica in replicas:
            replica.stop()
    loads["end"] = load_average()
    print(f"fidelity: load average (1 min) {loads}", file=progress)
    return Recording(
        seed=seed,
        engine=ENGINE_DESCRIPTION,
        prefill=prefill,
        decode=decode,
        api_server_s=api_server,
        isolated_cpu=isolated_cpu,
        runs=runs,
        load_average=loads,
        specs={spec[0]: list(spec) for spec in (*CALIBRATION_LOADS, *HELD_OUT, RANKING)},
    )


def _isolated_points(
    server: Any, seed: int, progress: TextIO
) -> tuple[list[tuple[int, float]], list[tuple[int, float]], list[float], CpuTimes]:
    """Lone prompts (engine TTFT, and the API server's delay apart) and decode batches (ITL),
    each the median of :data:`REPEATS` runs; the model worker's CPU accounting over them."""
    from trunkline.bench._engine_side import CpuTimes

    isolated_runs: list[RealRun] = []
    prefill: list[tuple[int, float]] = []
    api_server: list[float] = []
    for length in PREFILL_LENGTHS:
        lone = [
            _measure([server], _requests((f"cal-p{length}-{r}", 0.0, 1, length, 0, 2), seed))
            for r in range(REPEATS)
        ]
        isolated_runs += lone
        prefill.append((length, statistics.median(run.engine.ttft_mean_s for run in lone)))
        api_server.extend(run.measured[0].ttft - run.engine.ttft_mean_s for run in lone)
        print(
            f"fidelity: lone prompt of {length}: engine TTFT {prefill[-1][1]:.4f} s", file=progress
        )
    decode = []
    for batch in DECODE_BATCHES:
        batches = [
            _measure([server], _requests((f"cal-b{batch}-{r}", 0.0, batch, 16, 0, 48), seed))
            for r in range(REPEATS)
        ]
        isolated_runs += batches
        decode.append((batch, statistics.median(run.engine.itl_mean_s for run in batches)))
        print(f"fidelity: batch of {batch}: ITL {decode[-1][1]:.4f} s", file=progress)
    run_s, wait_s = (sum(getattr(r.cpu, f) for r in isolated_runs) for f in ("run_s", "wait_s"))
    return prefill, decode, api_server, CpuTimes(run_s, wait_s)


def _fit_sides(recording: Recording, progress: TextIO) -> tuple[dict[str, SimSide], dict[str, Any]]:
    """The simulated sides (see :data:`SIDES`): the isolated fit, then refined on the
    calibration loads; and notes on how they were fitted."""
    from trunkline.bench._fidelity_replay import SimSide, simulated_summary
    from trunkline.engines.calibration import CalibrationPoints, fit_profile, refine_profile
    from trunkline.engines.hardware import ACCELERATORS, MODELS
    from trunkline.engines.profiles import derive_profile

    seed = recording.seed
    # The fidelity model as the launcher serves it: 256 MiB of KV in 32-token blocks, and vLLM's
    # CPU limits; its step costs are what the fit replaces.
    cpu = dataclasses.replace(ACCELERATORS["xeon"], kv_cache_gib=0.25, block_size=32)
    base = derive_profile(cpu, MODELS[FIDELITY_MODEL])
    points = CalibrationPoints(
        recording.prefill, recording.decode, api_server_s=statistics.median(recording.api_server_s)
    )
    isolated = fit_profile(base, points, name="cpu-fidelity-isolated")
    loads = [
        (_requests(spec, seed), recording.runs[spec[0]], recording.runs[spec[0]].summary())
        for spec in CALIBRATION_LOADS
    ]

    def error(side: SimSide) -> float:
        total = 0.0
        for requests, run, real in loads:
            sim, _ = simulated_summary(side, 1, requests, run, "round-robin")
            total += sum(math.log(sim[m] / real[m]) ** 2 for m in REFINED_ON)
        return total

    wait_share = recording.isolated_cpu.wait_share
    sides = {"simulator-isolated-fit": SimSide(isolated)}
    for name, reference in (("simulator", None), ("simulator-cpu-adjusted", wait_share)):

        def side_error(profile: AcceleratorProfile, reference: float | None = reference) -> float:
            return error(SimSide(profile, reference))

        fitted = refine_profile(isolated, side_error, fields=REFINED_FIELDS)
        sides[name] = SimSide(dataclasses.replace(fitted, name=f"cpu-fidelity-{name}"), reference)
    errors = {name: error(side) for name, side in sides.items()}
    print(f"fidelity: calibration-load error per side {errors}", file=progress)
    notes: dict[str, Any] = {
        "prefill_engine_ttft_s": list(recording.prefill),
        "api_server_s_median": points.api_server_s,
        "decode_itl_s": list(recording.decode),
        "isolated_points_engine_cpu_wait_share": wait_share,
        "loads": list(CALIBRATION_LOADS),
        "load_figures": {spec[0]: recording.runs[spec[0]].summary() for spec in CALIBRATION_LOADS},
        "profiles": {name: dataclasses.asdict(side.profile) for name, side in sides.items()},
        "calibration_load_error": errors,
    }
    return sides, notes


def _relative_errors(runs: Runs, metric: str, side: str = "simulator") -> list[float]:
    from trunkline.fleet.replay import relative_errors

    return relative_errors(runs["real-vllm"], runs[side], metric)


def _median_error(metric: str, side: str) -> Callable[[Runs], float]:
    return lambda runs: statistics.median(_relative_errors(runs, metric, side))


def _ranking_agrees(side: str) -> Callable[[Runs], float]:
    from trunkline.fleet.replay import same_ranking

    pattern = "ranking.{}.ttft_mean_s"
    return lambda runs: float(same_ranking(runs["real-vllm"], runs[side], pattern))


_ERROR_GOALS = {
    "TTFT p50 (client)": "ttft_p50_s",
    "mean TTFT (engine: queue + prefill)": "engine_ttft_mean_s",
    "mean ITL (engine)": "itl_mean_s",
    "output throughput": "throughput_tok_s",
}
SIDES = ("simulator", "simulator-cpu-adjusted", "simulator-isolated-fit")
"""Simulated sides, each checked against the goals: refined on the calibration loads; the same,
its steps following the engine's measured share of its core; the isolated-request fit alone."""
GOALS = tuple(
    goal
    for side in SIDES
    for goal in (
        *(
            GoalSpec(
                f"{side}: median error over held-out loads, {label}",
                "<= 0.10",
                _median_error(m, side),
            )
            for label, m in _ERROR_GOALS.items()
        ),
        GoalSpec(
            f"{side}: same policy ranking, >= 5 % apart on both sides (1 = yes)",
            ">= 1",
            _ranking_agrees(side),
        ),
    )
)


def _compare(
    recording: Recording, sides: dict[str, SimSide]
) -> tuple[Runs, dict[str, list[float]]]:
    """Each held-out load and the ranking runs replayed on every simulated side, beside the
    real figures; and the TTFTs of the held-out loads for the CDF plot."""
    from trunkline.bench._fidelity_replay import simulated_summary

    runs: Runs = {"real-vllm": {}, **{side: {} for side in SIDES}}
    ttfts: dict[str, list[float]] = {"real-vllm": [], "simulator": [], "simulator-cpu-adjusted": []}
    for spec in HELD_OUT:
        run, requests = recording.runs[spec[0]], _requests(spec, recording.seed)
        runs["real-vllm"].update({f"{spec[0]}.{k}": v for k, v in run.summary().items()})
        ttfts["real-vllm"] += [m.ttft for m in run.measured]
        for name, side in sides.items():
            summary, times = simulated_summary(side, 1, requests, run, "round-robin")
            runs[name].update({f"{spec[0]}.{k}": v for k, v in summary.items()})
            if name in ttfts:
                ttfts[name] += times
    for policy in POLICIES:
        requests = _requests(RANKING, recording.seed, content=policy)
        run = recording.runs[f"ranking.{policy}"]
        runs["real-vllm"][f"ranking.{policy}.ttft_mean_s"] = run.summary()["ttft_mean_s"]
        for name, side in sides.items():
            summary, _ = simulated_summary(side, 2, requests, run, policy)
            runs[name][f"ranking.{policy}.ttft_mean_s"] = summary["ttft_mean_s"]
    return runs, ttfts


def _brief(figures: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in figures.items())


def run_fidelity(
    out_dir: Path, *, seed: int, progress: TextIO, measurements: Path | None = None
) -> BenchResult:
    """Measure real vLLM (or read ``measurements`` a run wrote), fit, compare, write reports."""
    from trunkline.bench._fidelity_record import Recording
    from trunkline.fleet.plot import plot_fidelity

    out_dir.mkdir(parents=True, exist_ok=True)
    if measurements is None:
        logs = out_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        recording = _record(fidelity_env(), logs, seed, progress)
    else:
        recording = Recording.load(measurements)
        print(f"fidelity: real vLLM's figures from {measurements} (not run)", file=progress)
    recording.save(out_dir / "measurements.json")
    for spec in (*CALIBRATION_LOADS, *HELD_OUT, RANKING):
        recording.check_spec(spec[0], spec)
    sides, calibration = _fit_sides(recording, progress)
    runs, ttfts = _compare(recording, sides)
    inputs = _inputs(recording, sides) | {
        "load_average_1_5_15_min": dict(recording.load_average),
        "measurements": str(measurements) if measurements else "measured in this run",
    }
    result = BenchResult.build("fidelity", simulated=False, inputs=inputs, runs=runs, goals=GOALS)
    write_result(out_dir, result)
    _write_detail(out_dir, runs, calibration)
    plot_fidelity(ttfts, runs, out_dir / "fidelity.png")
    return result


def _inputs(recording: Recording, sides: dict[str, SimSide]) -> dict[str, Any]:
    return {
        "engine": recording.engine,
        "calibration_loads": {
            "lone prompts": PREFILL_LENGTHS,
            "decode batches": DECODE_BATCHES,
            "repeats per point (median)": REPEATS,
            "poisson loads": [load[0] for load in CALIBRATION_LOADS],
        },
        "held_out_loads": [load[0] for load in HELD_OUT],
        "ranking_load": RANKING[0],
        "seed": recording.seed,
        "fitted_profiles": {name: dataclasses.asdict(side.profile) for name, side in sides.items()},
        "cpu_adjusted_reference_wait_share": sides["simulator-cpu-adjusted"].reference_wait_share,
    }


def _write_detail(out_dir: Path, runs: Runs, calibration: dict[str, Any]) -> None:
    from trunkline.fleet.stats import quantile

    real = runs["real-vllm"]
    spread = {
        side: {
            m: {"median": quantile(errors, 0.5), "p90": quantile(errors, 0.9)}
            for m in _ERROR_GOALS.values()
            if (errors := _relative_errors(runs, m, side))
        }
        for side in SIDES
    }
    per_load = {
        side: {
            load[0]: {
                m: runs[side][f"{load[0]}.{m}"] / real[f"{load[0]}.{m}"]
                for m in _ERROR_GOALS.values()
            }
            for load in HELD_OUT
        }
        for side in SIDES
    }
    detail = {
        "calibration": calibration,
        "simulated_over_real_per_held_out_load": per_load,
        "errors": spread,
    }
    (out_dir / "fidelity.json").write_text(json.dumps(detail, indent=2) + "\n")


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "fidelity",
        help="the engine simulator against real vLLM on this CPU (calibrate, then held-out loads)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--out", type=output_dir, required=True, help="directory for the results")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated loads")
    parser.add_argument(
        "--measurements",
        type=Path,
        help="fit and compare against the real-vLLM figures an earlier run wrote to "
        "DIR/measurements.json, without running vLLM (the recording's seed is used)",
    )
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.measurements is not None:  # what is wrong with them, in a line, not a traceback
        from trunkline.bench._fidelity_record import Recording

        try:
            Recording.load(args.measurements)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    result = run_fidelity(
        args.out, seed=args.seed, progress=sys.stderr, measurements=args.measurements
    )
    print_table(result)
    detail = json.loads((args.out / "fidelity.json").read_text())
    for side, errors in detail["errors"].items():
        for metric, error in errors.items():
            print(f"{side} {metric}: relative error over held-out loads, "
                  f"median {error['median']:.1%}, p90 {error['p90']:.1%}")  # fmt: skip
    print(f"wrote result.json, fidelity.json and fidelity.png in {args.out}")
    return 0
