"""``trunkline billing``: roll usage up, close periods, export FOCUS and invoices, manage the
price book and dedicated capacity, as the platform itself."""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trunkline.billing import closing, exports, pricebook_store
from trunkline.billing.capacity import add_capacity, end_capacity, hold_price_book
from trunkline.billing.export_file import write_file
from trunkline.billing.periods import parse_period
from trunkline.billing.pricebook import load_price_book_file, version_document
from trunkline.cli import billing_set_aside
from trunkline.cli.tenants import open_runtime
from trunkline.errors import InvalidRequest, NotFound
from trunkline.kit.db import one_view, transaction
from trunkline.kit.ids import utcnow
from trunkline.metering.rollups import rollup_usage
from trunkline.tenancy.changes import unit_of_work
from trunkline.tenancy.repository import ProjectRepository
from trunkline.tenancy.service import tenant_by_slug


def register(sub: Any) -> None:
    parser = sub.add_parser("billing", help="rollups, billing periods, FOCUS exports, prices")
    commands = parser.add_subparsers(dest="billing_command", required=True, metavar="COMMAND")

    export = commands.add_parser(
        "export",
        help="export a period as FOCUS CSV / Parquet or as invoices",
        description="Roll usage up and write the period's charges: final once the period is "
        "closed, preliminary before (--close closes an ended period first). Corrections to "
        "earlier closed periods appear as ChargeClass=Correction rows of the period they are "
        "billed in.",
    )
    export.add_argument("--period", required=True, help="YYYY-MM (UTC month)")
    export.add_argument("--format", required=True, choices=sorted(exports.FORMATS))
    export.add_argument("--tenant", help="one tenant's slug (default: every tenant)")
    export.add_argument("--out", type=Path, help="file to write (default: standard output)")
    export.add_argument(
        "--close",
        action="store_true",
        help="close the period first if it has ended (its bill becomes final; late events "
        "become corrections of a later period); without it, an export never closes anything",
    )
    export.add_argument("--preview", action="store_true", help=argparse.SUPPRESS)  # the default now
    export.set_defaults(func=export_command)

    close = commands.add_parser("close", help="close an ended period (its bill becomes final)")
    close.add_argument("--period", required=True, help="YYYY-MM")
    close.set_defaults(func=close_command)

    rollup = commands.add_parser("rollup", help="roll up usage events not rolled up yet")
    rollup.set_defaults(func=rollup_command)
    billing_set_aside.register(commands)

    prices = commands.add_parser("prices", help="the price book")
    price_commands = prices.add_subparsers(dest="prices_command", required=True)
    apply = price_commands.add_parser("apply", help="store a price book file's new versions")
    apply.add_argument("path", type=Path)
    apply.add_argument(
        "--keep-budget-amounts",
        action="store_true",
        help="a book in a new currency while cost budgets are set: take each budget's amount "
        "as an amount of the new currency (refused otherwise)",
    )
    apply.set_defaults(func=prices_apply_command)
    show = price_commands.add_parser("show", help="print the price book in force")
    show.set_defaults(func=prices_show_command)
    withdraw = price_commands.add_parser(
        "withdraw", help="delete a stored version that has not taken effect yet"
    )
    withdraw.add_argument("version", type=int)
    withdraw.set_defaults(func=prices_withdraw_command)

    capacity = commands.add_parser("capacity", help="record dedicated GPU capacity of a tenant")
    capacity.add_argument("--tenant", required=True)
    capacity.add_argument("--project", help="project name (optional)")
    capacity.add_argument("--flavor", required=True)
    capacity.add_argument("--gpus", type=int, required=True)
    capacity.add_argument("--region", default="")
    capacity.add_argument("--start", required=True, help="ISO 8601, e.g. 2026-11-01T00:00:00Z")
    capacity.add_argument("--end", help="ISO 8601 (default: open-ended)")
    capacity.set_defaults(func=capacity_command)
    capacity_end = commands.add_parser(
        "capacity-end", help="end a dedicated GPU allocation (its GPUs released)"
    )
    capacity_end.add_argument("capacity_id", type=uuid.UUID, help="as `capacity` printed it")
    capacity_end.add_argument("--end", required=True, help="ISO 8601, e.g. 2026-12-15T00:00:00Z")
    capacity_end.set_defaults(func=capacity_end_command)


def _instant(text: str, param: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"{param}: not an ISO 8601 date-time: {text!r}", param=param) from None
    try:  # stored in UTC: 9999-12-31T23:59:59-12:00 is past the last day Python knows
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise InvalidRequest(f"{param}: out of range: {text!r}", param=param) from None


def export_command(args: argparse.Namespace) -> int:
    period = parse_period(args.period)
    if args.format == "focus-parquet" and args.out is None:
        raise InvalidRequest("Parquet is binary: give --out FILE", param="out")
    runtime = open_runtime()
    try:
        rollup_usage(runtime.session_factory)
        with transaction(runtime.session_factory) as session:
            # Its groups of tenants agree with each other.
            if args.close:
                closing.closing_view(session)
            elif args.out is not None:
                one_view(session, read_only=False)
            tenant_id = tenant_by_slug(session, args.tenant).id if args.tenant else None
            if args.close and period.end <= utcnow():
                closing.close(session, period, utcnow())
            if args.out is not None:  # in the transaction: a failed write leaves it open
                export = exports.export_period(session, period, args.format, tenant_id)
                write_file(args.out, export.chunks)
        if args.out is None:  # after the commit: a reader that went (| head) undoes nothing
            with runtime.session_factory() as session:  # read as it is written
                export = exports.export_period(
                    session, period, args.format, tenant_id, reader=runtime.session_factory
                )
                for chunk in export.chunks:
                    sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
    finally:
        runtime.close()
    state = "final" if export.final else "preliminary"
    print(f"{period.label}: {export.lines} charge lines ({state})", file=sys.stderr)
    return 0


def close_command(args: argparse.Namespace) -> int:
    period = parse_period(args.period)
    runtime = open_runtime()
    try:
        rollup_usage(runtime.session_factory)
        with transaction(runtime.session_factory) as session:
            closing.closing_view(session)
            closed = closing.close(session, period, utcnow())
    finally:
        runtime.close()
    print(f"{period.label}: {'closed' if closed else 'was already closed'}")
    return 0


def rollup_command(_args: argparse.Namespace) -> int:
    runtime = open_runtime()
    try:
        run = rollup_usage(runtime.session_factory)
    finally:
        runtime.close()
    changed = f"{run.inserted} rows new, {run.updated} changed"
    print(f"rolled up {run.tenant_hours} tenant-hours ({changed})")
    return 0


def prices_apply_command(args: argparse.Namespace) -> int:
    book = load_price_book_file(args.path)
    runtime = open_runtime()
    try:
        with unit_of_work(runtime.session_factory, runtime.publish) as session:
            keep = args.keep_budget_amounts
            added = pricebook_store.apply_price_book(session, book, keep_budget_amounts=keep)
    finally:
        runtime.close()
    print(f"added versions: {', '.join(map(str, added))}" if added else "no new versions")
    return 0


def prices_withdraw_command(args: argparse.Namespace) -> int:
    runtime = open_runtime()
    try:
        with transaction(runtime.session_factory) as session:
            pricebook_store.withdraw_price_version(session, args.version, utcnow())
    finally:
        runtime.close()
    print(f"withdrew version {args.version}")
    return 0


def prices_show_command(_args: argparse.Namespace) -> int:
    import json

    runtime = open_runtime()
    try:
        with transaction(runtime.session_factory) as session:
            book = pricebook_store.load_price_book(session)
    finally:
        runtime.close()
    print(json.dumps([version_document(v) for v in book.versions], indent=2))
    return 0


def capacity_end_command(args: argparse.Namespace) -> int:
    runtime = open_runtime()
    try:
        with transaction(runtime.session_factory) as session:
            hold_price_book(session)  # the prices checked are those in force when it is stored
            prices = pricebook_store.load_price_book(session)
            row = end_capacity(session, args.capacity_id, _instant(args.end, "end"), prices=prices)
            said = f"capacity {row.id}: ends {row.ends_at:%Y-%m-%dT%H:%M:%SZ}"
        print(said)  # once committed: a commit that fails said nothing was done
    finally:
        runtime.close()
    return 0


def capacity_command(args: argparse.Namespace) -> int:
    runtime = open_runtime()
    try:
        with transaction(runtime.session_factory) as session:
            hold_price_book(session)  # the prices checked are those in force when it is stored
            tenant = tenant_by_slug(session, args.tenant)
            project_id = None
            if args.project:
                project = ProjectRepository(session, tenant.id).by_name(args.project)
                if project is None:
                    raise NotFound(f"project {args.project!r} not found", param="project")
                project_id = project.id
            row = add_capacity(
                session,
                tenant.id,
                args.flavor,
                args.gpus,
                _instant(args.start, "start"),
                _instant(args.end, "end") if args.end else None,
                prices=pricebook_store.load_price_book(session),
                region=args.region,
                project_id=project_id,
            )
            said = f"capacity {row.id}: {row.gpus} x {row.flavor} for {args.tenant}"
        print(said)  # once committed
    finally:
        runtime.close()
    return 0
