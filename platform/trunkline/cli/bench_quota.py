"""``trunkline bench quota-accuracy``: tokens admitted per minute against a tokens-per-minute
limit, reserve-then-settle vs settle-after-response, on a real Redis the benchmark starts."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from trunkline.cli.arguments import TIME_SCALE_HELP, output_dir, time_scale

METRICS = [
    "max_admitted_tokens",
    "mean_admitted_tokens",
    "max_over_limit_tokens",
    "max_over_limit_reservations",
    "mean_limit_used",
    "max_client_tokens_per_window",
    "requests_admitted",
    "requests_refused",
]


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "quota-accuracy",
        help="tokens admitted per minute vs a tokens/min limit, 4 gateways sharing Redis",
        description=(
            "Start Redis, a simulated engine and N gateway processes; two tenants limited to "
            "the same tokens per minute, one accounted after each response (the baseline), one "
            "reserving prompt + max_tokens before sending; concurrent streaming clients that "
            "honour Retry-After. Reports the tokens admitted in each whole UTC minute."
        ),
    )
    parser.add_argument("--out", type=output_dir, required=True, help="directory for the results")
    parser.add_argument("--limit", type=int, default=10_000, help="tokens per minute per tenant")
    parser.add_argument("--windows", type=int, default=2, help="whole UTC minutes measured")
    parser.add_argument("--clients", type=int, default=16, help="streaming clients per variant")
    parser.add_argument("--gateways", type=int, default=4, help="gateway processes")
    parser.add_argument("--min-tokens", type=int, default=100, help="smallest max_tokens asked")
    parser.add_argument("--max-tokens", type=int, default=250, help="largest max_tokens asked")
    parser.add_argument("--time-scale", type=time_scale, default=1.0, help=TIME_SCALE_HELP)
    parser.add_argument("--seed", type=int, default=1)
    parser.set_defaults(func=_quota_accuracy)


def _quota_accuracy(args: argparse.Namespace) -> int:
    from trunkline.bench.processes import sigterm_as_exit
    from trunkline.bench.quota_accuracy import QuotaAccuracyConfig, run_quota_accuracy
    from trunkline.bench.report import print_table

    try:
        config = QuotaAccuracyConfig(
            limit=args.limit,
            windows=args.windows,
            clients=args.clients,
            gateways=args.gateways,
            min_tokens=args.min_tokens,
            max_tokens=args.max_tokens,
            time_scale=args.time_scale,
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with sigterm_as_exit():
        result = run_quota_accuracy(config, args.out, progress=sys.stderr)
    print_table(result, metrics=METRICS, unit="tokens")
    print(f"wrote {args.out / 'result.json'} and {args.out / 'windows.png'}")
    return 0
