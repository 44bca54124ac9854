"""``trunkline bench admission``: SLO admission per tier vs FIFO on a simulated fleet."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from trunkline.cli.arguments import output_dir


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "admission",
        help="SLO admission per tier vs FIFO at 1x-3x of capacity (simulated fleet)",
        description=(
            "Measure a simulated fleet's capacity on the b2b-tiers workload, then offer 1x, "
            "1.5x, 2x and 3x of it first come, first served (the baseline) and through the "
            "gateway's SLO admission policy, in the same run; report per-tier TTFT attainment, "
            "rejections, decision time, fairness and a noisy tenant's effect."
        ),
    )
    parser.add_argument("--out", type=output_dir, required=True, help="directory for the results")
    parser.add_argument("--profile", default="l40s", help="accelerator profile of every engine")
    parser.add_argument("--replicas", type=int, default=2, help="simulated engines")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of arrivals per run")
    parser.add_argument("--seed", type=int, default=1, help="workload and engine seed")
    parser.add_argument(
        "--burst-replicas",
        type=int,
        default=1,
        help="replicas of a gold-only burst pool beside the shared one (0: none)",
    )
    parser.add_argument(
        "--loads", default="1,1.5,2,3", help="offered loads, multiples of the measured capacity"
    )
    parser.set_defaults(func=_admission)


def _admission(args: argparse.Namespace) -> int:
    from trunkline.bench.admission import AdmissionBenchConfig, run_admission_bench, table_rows
    from trunkline.bench.report import print_table

    try:
        loads = tuple(float(x) for x in args.loads.split(",") if x.strip())
        config = AdmissionBenchConfig(
            profile=args.profile,
            replicas=args.replicas,
            duration_s=args.duration,
            seed=args.seed,
            loads=loads,
            burst_replicas=args.burst_replicas,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = run_admission_bench(config, args.out, progress=sys.stderr)
    print_table(result, metrics=table_rows(result.runs, config.loads))
    files = ", ".join(str(args.out / name) for name in ("result.json", "detail.json"))
    print(f"wrote {files} and {args.out / 'admission.png'}")
    return 0
