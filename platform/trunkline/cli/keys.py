"""``trunkline keys``: create, list, revoke and rotate API keys as the platform itself."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from trunkline.apps.runtime import Runtime
from trunkline.auth.principal import Principal
from trunkline.cli.options import convert_options, option_of
from trunkline.cli.tenants import open_runtime
from trunkline.errors import NotFound
from trunkline.keys import service
from trunkline.keys.schemas import ApiKey, ApiKeyCreate, ApiKeyCreated
from trunkline.tenancy.changes import unit_of_work
from trunkline.tenancy.repository import ProjectRepository
from trunkline.tenancy.service import tenant_by_slug

T = TypeVar("T")


def _key_option(field: str) -> str:
    """The option of ``keys create`` a field of the key's body comes from."""
    return {"allowed_models": "--models", "project_id": "--project"}.get(field) or option_of(field)


def register(sub: Any) -> None:
    parser = sub.add_parser("keys", help="API keys for the gateway")
    commands = parser.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    create = commands.add_parser("create", help="create a key and print its secret (once)")
    create.add_argument("--tenant", required=True, help="tenant slug")
    create.add_argument("--project", required=True, help="project name")
    create.add_argument("--name", required=True, help="a name for the key")
    create.add_argument("--models", help="comma-separated aliases (default: all entitled)")
    create.add_argument("--tier", help="pin to a tier no higher than the tenant's")
    create.add_argument("--ttl-days", type=int, help="expire after this many days")
    create.set_defaults(func=create_command)

    listing = commands.add_parser("list", help="list a tenant's keys (never their secrets)")
    listing.add_argument("--tenant", required=True, help="tenant slug")
    listing.set_defaults(func=list_command)

    revoke = commands.add_parser("revoke", help="revoke a key")
    revoke.add_argument(
        "key_id", help="the key id: the 12 characters after tlk_ (trunkline keys list shows it)"
    )
    revoke.set_defaults(func=revoke_command)

    rotate = commands.add_parser("rotate", help="replace a key by a new one with the same scope")
    rotate.add_argument(
        "key_id", help="the key id: the 12 characters after tlk_ (trunkline keys list shows it)"
    )
    rotate.add_argument(
        "--grace-s",
        type=_grace_s,
        default=0,
        help="keep the old key working this many seconds more (at most 604800); default: revoke it",
    )
    rotate.set_defaults(func=rotate_command)


def _grace_s(text: str) -> int:
    """Seconds the old key of a rotation keeps working: a usage error naming ``--grace-s``
    (the service's refusal named the API's ``grace_s``, and only once the key was found)."""
    try:
        seconds = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    if not 0 <= seconds <= service.MAX_ROTATION_GRACE_S:
        raise argparse.ArgumentTypeError(
            f"must be from 0 to {service.MAX_ROTATION_GRACE_S} (7 days), not {seconds}"
        )
    return seconds


def _run(work: Callable[[Session, Runtime], T]) -> T:
    """Run ``work`` in one transaction and publish the snapshot after commit if it changed."""
    runtime = open_runtime()
    try:
        with unit_of_work(runtime.session_factory, runtime.publish) as session:
            return work(session, runtime)
    finally:
        runtime.close()


def create_command(args: argparse.Namespace) -> int:
    def work(session: Session, runtime: Runtime) -> ApiKeyCreated:
        tenant = tenant_by_slug(session, args.tenant)
        project = ProjectRepository(session, tenant.id).by_name(args.project)
        if project is None:
            raise NotFound(f"project {args.project!r} not found in {args.tenant}", param="project")
        models = None if args.models is None else [m.strip() for m in args.models.split(",")]
        raw = {"project_id": str(project.id), "name": args.name, "allowed_models": models,
               "tier": args.tier, "ttl_days": args.ttl_days}  # fmt: skip
        data = convert_options(raw, ApiKeyCreate, _key_option)
        principal = Principal.system()
        return service.create_key(session, principal, runtime.server_secret, tenant.id, data)

    created = _run(work)
    _print_keys([created.key], file=sys.stderr)
    print(created.secret)
    return 0


def list_command(args: argparse.Namespace) -> int:
    def work(session: Session, _runtime: Runtime) -> list[ApiKey]:
        tenant = tenant_by_slug(session, args.tenant)
        return service.list_keys(session, Principal.system(), tenant.id).items

    _print_keys(_run(work))
    return 0


def revoke_command(args: argparse.Namespace) -> int:
    def work(session: Session, _runtime: Runtime) -> ApiKey:
        tenant_id = service.key_tenant(session, args.key_id)
        return service.revoke_key(session, Principal.system(), tenant_id, args.key_id)

    key = _run(work)
    print(f"revoked {key.key_id} ({key.name})")
    return 0


def rotate_command(args: argparse.Namespace) -> int:
    def work(session: Session, runtime: Runtime) -> ApiKeyCreated:
        tenant_id = service.key_tenant(session, args.key_id)
        principal = Principal.system()
        return service.rotate_key(
            session, principal, runtime.server_secret, tenant_id, args.key_id,
            grace_s=args.grace_s,
        )  # fmt: skip

    created = _run(work)
    print(f"rotated {args.key_id} -> {created.key.key_id}", file=sys.stderr)
    print(created.secret)
    return 0


def _print_keys(keys: list[ApiKey], *, file: Any = None) -> None:
    rows = [
        ("KEY_ID", "NAME", "PROJECT", "STATUS", "TIER", "CREATED", "LAST_USED", "EXPIRES",
         "REVOKED", "MODELS")
    ]  # fmt: skip
    rows += [
        (k.key_id, k.name, k.project, k.status, k.tier or "-", _day(k.created_at),
         _day(k.last_used_at), _day(k.expires_at), _day(k.revoked_at),
         ",".join(k.allowed_models) if k.allowed_models else "*")
        for k in keys
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(),
              file=file or sys.stdout)  # fmt: skip


def _day(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M")
