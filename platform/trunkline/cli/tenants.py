"""``trunkline tenants``: validate and apply manifests, print their schema, mint admin tokens
and revoke a user's tokens, and turn a tenant's prefix-cache isolation on or off."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import msgspec
from sqlalchemy.orm import Session

from trunkline.apps.runtime import Runtime, build_runtime, require_schema
from trunkline.auth.schemas import Email
from trunkline.auth.service import admin_token, revoke_access_tokens
from trunkline.billing.pricebook_store import price_book_currency
from trunkline.gateway.routing.candidates import poolless, stranded
from trunkline.kit.migrate import require_existing
from trunkline.settings import load_settings
from trunkline.snapshot.builder import build_snapshot
from trunkline.tenancy import service
from trunkline.tenancy.changes import unit_of_work
from trunkline.tenancy.manifests import (
    ManifestError,
    Manifests,
    apply_manifests,
    load_manifests,
    manifest_json_schema_text,
)
from trunkline.tenancy.manifests.checks import budget_issues
from trunkline.tenancy.schemas import TenantUpdate

T = TypeVar("T")


MAX_TTL_DAYS = 3650


def _email(text: str) -> str:
    """An e-mail address as the API takes one (``auth.schemas.Email``); else a usage error."""
    try:
        return msgspec.convert(text, Email)
    except msgspec.ValidationError:
        raise argparse.ArgumentTypeError(f"not an e-mail address: {text!r}") from None


def _currency(text: str) -> str:
    """A currency as a price book names it (ISO 4217: three letters, in either case)."""
    code = text.strip().upper()
    if not (len(code) == 3 and code.isascii() and code.isalpha()):
        raise argparse.ArgumentTypeError(f"not an ISO 4217 currency code: {text!r}")
    return code


def _ttl_days(text: str) -> int:
    """0 (never expires) to :data:`MAX_TTL_DAYS`; anything else is a usage error."""
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {text!r}") from None
    if not 0 <= days <= MAX_TTL_DAYS:
        raise argparse.ArgumentTypeError(f"must be 0 (never) to {MAX_TTL_DAYS} days")
    return days


def register(sub: Any) -> None:
    parser = sub.add_parser("tenants", help="tenants as code, and platform admin tokens")
    commands = parser.add_subparsers(dest="tenants_command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check manifests without touching a database")
    validate.add_argument("path", help="a manifest file or a directory of *.yaml files")
    validate.add_argument(
        "--currency",
        type=_currency,
        help="the price book's currency (ISO 4217): check cost budgets against it as apply does",
    )
    validate.set_defaults(func=validate_command)

    apply = commands.add_parser("apply", help="create or update what the manifests declare")
    apply.add_argument("path", help="a manifest file or a directory of *.yaml files")
    apply.set_defaults(func=apply_command)

    schema = commands.add_parser("schema", help="print the JSON schema of a manifest document")
    schema.set_defaults(func=schema_command)

    token = commands.add_parser(
        "admin-token", help="print an access token for a platform admin (created if needed)"
    )
    token.add_argument("--email", required=True, type=_email, help="the admin's e-mail address")
    token.add_argument(
        "--ttl-days",
        type=_ttl_days,
        default=30,
        help=f"0 for a token that never expires; at most {MAX_TTL_DAYS}",
    )
    token.set_defaults(func=admin_token_command)

    revoke = commands.add_parser(
        "revoke-tokens", help="revoke every access token of a user (a leaked token, a leaver)"
    )
    revoke.add_argument("--email", required=True, type=_email, help="the user's e-mail address")
    revoke.set_defaults(func=revoke_tokens_command)

    isolation = commands.add_parser(
        "cache-isolation",
        help="give a tenant its own prefix cache on shared engines (on), or share it (off)",
    )
    isolation.add_argument("slug", help="tenant slug")
    isolation.add_argument("state", choices=("on", "off"), help="on: its own cache; off: shared")
    isolation.set_defaults(func=cache_isolation_command)


def open_runtime() -> Runtime:
    """The runtime of the configured environment (``TRUNKLINE_*`` variables), over a database
    migrated to this code's schema: anything else is a one-line error saying what to run, and
    a SQLite file that is not there is not created (nor its directory). Production settings
    are checked first: their refusal says what to set, not to run ``trunkline up``."""
    settings = load_settings()
    settings.check_production()
    require_existing(settings.database.url)
    return require_schema(build_runtime(settings))


def run_work(work: Callable[[Session, Runtime], T]) -> T:
    """Run ``work`` in one transaction; publish the snapshot after commit if it changed."""
    runtime = open_runtime()
    try:
        with unit_of_work(runtime.session_factory, runtime.publish) as session:
            return work(session, runtime)
    finally:
        runtime.close()


def validate_command(args: argparse.Namespace) -> int:
    try:
        manifests = load_manifests(args.path, args.currency)
    except ManifestError as exc:
        return _report_issues(exc)
    files = {d.file for d in manifests.documents}
    print(f"ok: {len(manifests.documents)} documents in {len(files)} files")
    return 0


def apply_command(args: argparse.Namespace) -> int:
    try:
        manifests = load_manifests(args.path)
    except ManifestError as exc:
        return _report_issues(exc)
    runtime = open_runtime()
    try:
        return apply_over(runtime, manifests)
    finally:
        runtime.close()


def apply_over(runtime: Runtime, manifests: Manifests) -> int:
    """``tenants apply`` of ``manifests`` over ``runtime``: prints what changed, and warns of
    entitlements no pool serves; the exit code."""
    with runtime.session_factory() as session:
        currency = price_book_currency(session)
    if issues := budget_issues(manifests, currency):
        return _report_issues(ManifestError(issues))
    report = apply_manifests(runtime.session_factory, manifests, publish=runtime.publish)
    with runtime.session_factory() as session:
        configured = build_snapshot(session, 0, cache_secret=runtime.server_secret)
    for line in report.lines():
        print(line)
    for tenant, alias in stranded(configured):
        print(
            f"warning: tenant {tenant.slug} ({tenant.tier}) is entitled to {alias.alias}, but no "
            "pool of it in the tenant's regions serves that tier: its requests get a 403",
            file=sys.stderr,
        )
    for alias, tenants in poolless(configured):
        print(
            f"warning: no pool serves {alias.alias} (model {alias.model}), which {tenants} "
            f"tenant{'s are' if tenants > 1 else ' is'} entitled to: its requests get a 503 "
            "until a pool of that model is added",
            file=sys.stderr,
        )
    return 0


def schema_command(_args: argparse.Namespace) -> int:
    sys.stdout.write(manifest_json_schema_text())
    return 0


def admin_token_command(args: argparse.Namespace) -> int:
    ttl = timedelta(days=args.ttl_days) if args.ttl_days > 0 else None
    runtime = open_runtime()
    try:
        with unit_of_work(runtime.session_factory, runtime.publish) as session:
            issued = admin_token(session, runtime.server_secret, args.email, ttl=ttl)
    finally:
        runtime.close()
    expiry = "never" if issued.expires_at is None else issued.expires_at.isoformat()
    print(f"platform admin {issued.user.email}, token expires {expiry}", file=sys.stderr)
    print(issued.access_token)
    return 0


def revoke_tokens_command(args: argparse.Namespace) -> int:
    revoked = run_work(lambda session, _runtime: revoke_access_tokens(session, args.email))
    print(f"revoked {revoked} access token(s) of {args.email.strip().lower()}")
    return 0


def cache_isolation_command(args: argparse.Namespace) -> int:
    def work(session: Session, _runtime: Runtime) -> bool:
        tenant = service.tenant_by_slug(session, args.slug)
        update = TenantUpdate(cache_isolated=args.state == "on")
        return service.update_tenant(session, tenant.id, update).cache_isolated

    isolated = run_work(work)
    shared = "its own prefix cache" if isolated else "the shared prefix cache"
    print(f"tenant {args.slug}: {shared}")
    return 0


def _report_issues(exc: ManifestError) -> int:
    for issue in exc.issues:
        print(issue, file=sys.stderr)
    print(f"{len(exc.issues)} problem(s) found", file=sys.stderr)
    return 1
