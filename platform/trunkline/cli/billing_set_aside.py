"""``trunkline billing set-aside-misdated``: take out of the ledger the usage a gateway's wrong
clock stamped at a time no bill can hold (``metering.set_aside``), as ingest now sets it aside
itself, so billing closes go on."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec
import redis

from trunkline.billing.export_file import append_file
from trunkline.cli.tenants import open_runtime
from trunkline.errors import InvalidRequest, Unavailable
from trunkline.kit.db import transaction
from trunkline.kit.ids import utcnow
from trunkline.metering.redis_stream import READ_TIMEOUT_S, append_dead_letters, stream_name
from trunkline.metering.rollups import rollup_usage
from trunkline.metering.schemas import UsageRecord
from trunkline.metering.set_aside import misdated_in_ledger, remove_from_ledger


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "set-aside-misdated",
        help="take usage stamped by a wrong gateway clock out of the ledger",
        description="Usage events in the ledger stamped before the first price book version "
        "(a gateway clock reset to the epoch: every billing close stops on them) or more than "
        "TRUNKLINE_JOBS__USAGE_CLOCK_SKEW_S ahead of now (this machine's clock: the ledger keeps "
        "no time an event entered the stream, which ingest judges by) are moved to the usage "
        "dead-letter stream, each with the reason (or to --out, JSON lines, where there is no "
        "Redis), and their hours are rolled up again without them. Prints one line per event. "
        "Those of a closed period are left (billed there).",
    )
    parser.add_argument(
        "--out", type=Path, help="add the events to this file (JSON lines), not to Redis"
    )
    parser.add_argument("--dry-run", action="store_true", help="print them, change nothing")
    parser.set_defaults(func=set_aside_command)


def set_aside_command(args: argparse.Namespace) -> int:
    from trunkline.worker.jobs import load_job_settings

    max_ahead_s = load_job_settings().usage_clock_skew_s
    runtime = open_runtime()
    try:
        url, prefix = runtime.settings.redis.url, runtime.settings.redis.key_prefix
        if url is None and args.out is None and not args.dry_run:
            raise InvalidRequest(
                "no Redis is configured to keep the events in (embedded mode): give --out FILE",
                param="out",
            )
        with transaction(runtime.session_factory) as session:
            misdated = misdated_in_ledger(session, utcnow(), max_ahead_s)
            found = misdated.open
            if found and not args.dry_run:
                # Kept before they leave the ledger: a failed commit leaves a copy, never none
                # (the ledger takes an event again once only, by its request id).
                _keep(found, args.out, url, prefix)
                remove_from_ledger(session, [record for record, _why in found])
        if found and not args.dry_run:
            rollup_usage(runtime.session_factory)
    finally:
        runtime.close()
    for record, why in found:
        print(f"{record.request_id}\t{record.tenant_id}\t{why}")
    done = "would be set aside" if args.dry_run else "set aside"
    print(f"{len(found)} usage events {done}", file=sys.stderr)
    if misdated.billed:
        periods = ", ".join(sorted({period for _record, period in misdated.billed}))
        print(
            f"{len(misdated.billed)} misdated usage events left in closed periods, billed there "
            f"({periods}): taken out, every later close would re-rate those periods",
            file=sys.stderr,
        )
    return 0


def _keep(
    found: list[tuple[UsageRecord, str]], out: Path | None, url: str | None, prefix: str
) -> None:
    if out is not None:
        lines = (msgspec.json.encode({"e": record, "error": why}) + b"\n" for record, why in found)
        append_file(out, lines)  # the only copy: what an earlier run kept there stays
        return
    assert url is not None
    client = redis.Redis.from_url(
        url, socket_timeout=READ_TIMEOUT_S, socket_connect_timeout=READ_TIMEOUT_S
    )
    try:
        append_dead_letters(client, stream_name(prefix), found)
    except redis.RedisError as exc:  # the events stay in the ledger: the transaction rolls back
        raise Unavailable(
            f"Redis did not take the events ({exc}); nothing was set aside: run it again once "
            "Redis answers, or give --out FILE"
        ) from exc
    finally:
        client.close()
