"""``trunkline bench NAME --out DIR``: run a benchmark, print it side by side, write
``DIR/result.json`` and a plot. See docs/benchmarks.md."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from trunkline.bench import fidelity as bench_fidelity
from trunkline.bench import fleet as bench_fleet
from trunkline.cli import bench_admission, bench_metering, bench_quota, bench_routing
from trunkline.cli.arguments import output_dir


def register(sub: Any) -> None:
    parser = sub.add_parser("bench", help="run a benchmark and write DIR/result.json plus a plot")
    commands = parser.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")

    overhead = commands.add_parser(
        "overhead",
        help="latency the gateway adds over a direct call to a simulated engine",
        description=(
            "Send the same non-streamed chat completion N times straight to a simulated vLLM "
            "engine and N times through a gateway in front of it (each server in its own "
            "process), interleaved in blocks, and compare the latencies."
        ),
    )
    overhead.add_argument("--out", type=output_dir, required=True, help="directory for the results")
    overhead.add_argument(
        "-n", "--requests", type=int, default=1000, help="measured requests per variant"
    )
    overhead.add_argument("--warmup", type=int, default=50, help="uncounted requests per variant")
    overhead.add_argument(
        "--block", type=int, default=50, help="requests of one variant before switching"
    )
    overhead.add_argument("--model", default="bench-llama-8b", help="model the engine serves")
    overhead.add_argument("--profile", default="h100", help="simulated accelerator profile")
    overhead.add_argument("--max-tokens", type=int, default=16, help="completion tokens asked")
    overhead.add_argument("--prompt", help="user message to send (default: a short question)")
    overhead.set_defaults(func=_overhead)
    pool = commands.add_parser(
        "pool",
        help="time the engine connection pool's hand-out: httpcore's against the gateway's",
    )
    pool.add_argument("--out", type=output_dir, required=True, help="directory for the results")
    pool.add_argument("--times", type=int, default=20, help="hand-outs timed per round")
    pool.add_argument("--rounds", type=int, default=3, help="rounds per pool (the best is kept)")
    pool.set_defaults(func=_pool)
    bench_metering.register(commands)
    bench_quota.register(commands)
    bench_fleet.register(commands)
    bench_fidelity.register(commands)
    bench_routing.register(commands)
    bench_admission.register(commands)


def _overhead(args: argparse.Namespace) -> int:
    from trunkline.bench.overhead import DEFAULT_PROMPT, OverheadConfig, run_overhead
    from trunkline.bench.processes import sigterm_as_exit
    from trunkline.bench.report import print_table

    try:
        config = OverheadConfig(
            requests=args.requests,
            warmup=args.warmup,
            block=args.block,
            model=args.model,
            profile=args.profile,
            prompt=args.prompt or DEFAULT_PROMPT,
            max_tokens=args.max_tokens,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with sigterm_as_exit():
        result = run_overhead(config, args.out, progress=sys.stderr)
    print_table(result, metrics=["p50_ms", "p90_ms", "p99_ms", "mean_ms"], unit="ms")
    print(f"wrote {args.out / 'result.json'} and {args.out / 'latency.png'}")
    return 0


def _pool(args: argparse.Namespace) -> int:
    from trunkline.bench.pool_handout import run_pool_bench
    from trunkline.bench.report import print_table, write_result

    try:
        result = run_pool_bench(args.out, times=args.times, rounds=args.rounds)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = write_result(args.out, result)
    print_table(result, unit="ms")
    print(f"wrote {path} and {args.out / 'handout.png'}")
    return 0
