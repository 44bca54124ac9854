"""``trunkline quota``: show and set quota limits of tiers, tenants and keys, as the platform.

    trunkline quota show --tier gold
    trunkline quota show --tenant acme [--key KEY_ID]
    trunkline quota set --tier gold --scope key --tokens-per-minute 200000
    trunkline quota set --tenant acme --scope tenant --cost-per-month 500 --tokens-per-day none
    trunkline quota set --key KEY_ID --requests-per-minute inherit

A value is a number, ``none`` (unlimited) or ``inherit`` (drop the override). Changes are
published to every gateway after commit. ``--cost-per-month`` is an amount of the price book's
currency; ``--cost-per-month-usd``, its deprecated alias, works only while that is USD.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from collections.abc import Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis
from sqlalchemy.orm import Session

from trunkline.apps.runtime import REDIS_TIMEOUT_S, Runtime
from trunkline.auth.principal import Principal
from trunkline.cli.options import convert_options
from trunkline.cli.tenants import open_runtime
from trunkline.errors import InvalidRequest
from trunkline.keys.service import key_tenant
from trunkline.quota import service
from trunkline.quota.policy import ALIAS, FIELDS, merge
from trunkline.quota.redis_store import RedisQuotaStore
from trunkline.quota.rules import Vector
from trunkline.quota.schemas import QuotaLimits, ScopeLimits
from trunkline.quota.service import UsageReader
from trunkline.quota.store import StoreUnavailable
from trunkline.quota.windows import system_clock
from trunkline.settings import Settings
from trunkline.tenancy.changes import unit_of_work
from trunkline.tenancy.service import tenant_by_slug

SCOPES = ("tenant", "project", "key")
FLAGS = (*FIELDS, ALIAS)
MONEY = ("cost_per_month", ALIAS)


def register(sub: Any) -> None:
    parser = sub.add_parser("quota", help="quota limits of tiers, tenants and keys")
    commands = parser.add_subparsers(dest="quota_command", required=True, metavar="COMMAND")

    show = commands.add_parser("show", help="print limits (and usage, with Redis) as JSON")
    _subject(show)
    show.set_defaults(func=show_command)

    change = commands.add_parser(
        "set",
        help="change some limits, keep the others",
        description="Change the limits named, keep the others. A limit is N (a number; "
        "cost in the price book's currency), none (no limit) or inherit (no override: "
        "what the level above sets, the tier's defaults for a tenant or key).",
    )
    _subject(change)
    change.add_argument("--scope", choices=SCOPES, help="scope to change (tier, tenant)")
    for name in FIELDS:
        change.add_argument(
            "--" + name.replace("_", "-"), metavar="N|none|inherit", help=name.replace("_", " ")
        )
    deprecated = "deprecated: --cost-per-month, while the price book is in USD"
    change.add_argument("--cost-per-month-usd", metavar="N|none|inherit", help=deprecated)
    change.set_defaults(func=set_command)


def _subject(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tier", help="tier name")
    parser.add_argument("--tenant", help="tenant slug")
    parser.add_argument("--key", help="key id (the 12 characters after tlk_ in the key)")


def show_command(args: argparse.Namespace) -> int:
    if args.tier and (args.tenant or args.key):
        raise InvalidRequest("--tier shows a tier's limits alone: drop --tenant and --key")
    _print(_run(functools.partial(_view, args), changing=False))
    return 0


def _view(args: argparse.Namespace, session: Session, runtime: Runtime) -> msgspec.Struct:
    """What ``show`` prints: a tier's limits, or a key's or a tenant's with their usage."""
    read = usage_reader(runtime.settings)
    if args.tier:
        return service.get_tier_quota(session, args.tier)
    if args.key:
        # With --tenant, the key must be that tenant's (it showed another tenant's key).
        tenant_id = (
            tenant_by_slug(session, args.tenant).id
            if args.tenant
            else key_tenant(session, args.key)
        )
        return service.key_quota(session, Principal.system(), tenant_id, args.key, read)
    if args.tenant:
        tenant = tenant_by_slug(session, args.tenant)
        return service.tenant_quota(session, Principal.system(), tenant.id, read)
    raise InvalidRequest("name one of --tier, --tenant or --key")


def _one_target(args: argparse.Namespace) -> None:
    """Exactly one of --tier, --tenant, --key: with two, one would be silently ignored."""
    named = [flag for flag in ("tier", "tenant", "key") if getattr(args, flag)]
    if len(named) != 1:
        raise InvalidRequest("name one of --tier, --tenant or --key")


def set_command(args: argparse.Namespace) -> int:
    _one_target(args)
    if args.key and args.scope is not None:
        raise InvalidRequest(
            "--scope is for --tier and --tenant; a key has one scope", param="scope"
        )
    changes, forget = _changes(args)

    def work(session: Session, _runtime: Runtime) -> None:
        system = Principal.system()
        if args.key:
            tenant_id = key_tenant(session, args.key)
            own = service.key_quota(session, system, tenant_id, args.key, _no_usage).overrides
            service.set_key_quota(session, system, tenant_id, args.key, merge(own, changes, forget))
        elif args.scope is None:
            raise InvalidRequest("--scope is required with --tier or --tenant", param="scope")
        elif args.tier:
            doc = service.get_tier_quota(session, args.tier)
            service.set_tier_quota(session, args.tier, _edit(doc, args.scope, changes, forget))
        else:
            tenant = tenant_by_slug(session, args.tenant)
            doc = service.tenant_quota(session, system, tenant.id, _no_usage).overrides
            service.set_tenant_quota(session, tenant.id, _edit(doc, args.scope, changes, forget))

    _run(work)
    # Read back after the commit: usage comes from Redis, which the change's transaction,
    # holding the configuration's lock every write waits for, must not wait on.
    _print(_run(functools.partial(_view, args), changing=False))
    return 0


def _no_usage(_tenant_id: str, _scopes: Sequence[tuple[str, str]]) -> None:
    """A ``UsageReader`` for views read for their limits alone."""
    return None


def _edit(
    doc: QuotaLimits, scope: str, changes: ScopeLimits, forget: tuple[str, ...]
) -> QuotaLimits:
    return msgspec.structs.replace(doc, **{scope: merge(getattr(doc, scope), changes, forget)})


def _changes(args: argparse.Namespace) -> tuple[ScopeLimits, tuple[str, ...]]:
    if getattr(args, ALIAS) is not None and args.cost_per_month is not None:
        # Whatever their values: "inherit" of one beside a number of the other was either.
        raise InvalidRequest("give --cost-per-month or --cost-per-month-usd, not both")
    given: dict[str, float | None] = {}
    forget = []
    for name in FLAGS:
        value = getattr(args, name)
        if value is None:
            continue
        if value == "inherit":
            forget.append("cost_per_month" if name == ALIAS else name)
        elif value == "none":
            given[name] = None
        else:
            try:
                given[name] = float(value) if name in MONEY else int(value)
            except ValueError:
                flag = "--" + name.replace("_", "-")
                raise InvalidRequest(f"{flag}: expected a number, none or inherit") from None
    return convert_options(given, ScopeLimits), tuple(forget)


def usage_reader(settings: Settings) -> UsageReader:
    """Usage from Redis; none in embedded mode (the counters live in the server process)."""
    url, prefix = settings.redis.url, settings.redis.key_prefix

    def read(tenant_id: str, scopes: Sequence[tuple[str, str]]) -> tuple[int, list[Vector]] | None:
        if url is None:
            return None
        now = system_clock()

        async def fetch() -> list[Vector]:
            client = aioredis.Redis.from_url(
                url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
            )
            store = RedisQuotaStore(client, prefix)
            try:
                return await store.usage(tenant_id, scopes, now)
            finally:
                await store.close()

        try:
            return now, asyncio.run(fetch())
        except StoreUnavailable as exc:
            # Said: "usage": null alone reads as embedded mode's, where there is none to read.
            print(f"warning: usage is not shown: {exc}", file=sys.stderr)
            return None

    return read


def _run(work: Any, *, changing: bool = True) -> Any:
    """``work(session, runtime)`` in a transaction that may change the configuration (its
    change published after the commit), or in a session that reads."""
    runtime = open_runtime()
    try:
        if not changing:
            with runtime.session_factory() as session:
                return work(session, runtime)
        with unit_of_work(runtime.session_factory, runtime.publish) as session:
            return work(session, runtime)
    finally:
        runtime.close()


def _print(value: msgspec.Struct) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")
