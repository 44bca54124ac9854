"""``trunkline bench metering``: batched usage ingest vs one row per request, and the FOCUS
export of a month, on real PostgreSQL and Redis that the benchmark starts itself."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from trunkline.cli.arguments import output_dir

METRICS = [
    "events_per_s",
    "db_transactions_per_1k_events",
    "lost_events",
    "doubled_events",
    "token_difference",
    "emit_events_per_s",
    "rollup_1m_events_s",
    "rollup_events_per_s",
    "rollup_again_events_per_s",
    "export_focus_csv_s",
    "export_focus_csv_rows",
    "export_focus_parquet_s",
]


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "metering",
        help="usage ingest: batched stream vs one row per request; FOCUS export of 1M events",
        description=(
            "Start PostgreSQL (fsync on) and Redis (append-only file), ingest N usage events "
            "one row per request and through the Redis stream + batching consumer, reconcile "
            "both ledgers, then roll up and export a month of events to FOCUS CSV and Parquet."
        ),
    )
    parser.add_argument("--out", type=output_dir, required=True, help="directory for the results")
    parser.add_argument("-n", "--events", type=int, default=200_000, help="events (pipeline)")
    parser.add_argument("--baseline-events", type=int, default=20_000, help="events (baseline)")
    parser.add_argument("--writers", type=int, default=8, help="baseline connections")
    parser.add_argument("--export-events", type=int, default=1_000_000)
    parser.add_argument(
        "--unsafe-fast-postgres", action="store_true", help="fsync off (not production-like)"
    )
    parser.set_defaults(func=_metering)


def _metering(args: argparse.Namespace) -> int:
    from trunkline.bench.metering import MeteringConfig, run_metering
    from trunkline.bench.processes import sigterm_as_exit
    from trunkline.bench.report import print_table

    try:
        config = MeteringConfig(
            events=args.events,
            baseline_events=args.baseline_events,
            writers=args.writers,
            export_events=args.export_events,
            durable=not args.unsafe_fast_postgres,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with sigterm_as_exit():
        result = run_metering(config, args.out, progress=sys.stderr)
    print_table(result, metrics=[m for m in METRICS if m in result.runs["batched-stream"]])
    print(f"wrote {args.out / 'result.json'} and {args.out / 'metering.png'}")
    return 0
