"""``trunkline pools``: list, show, create and update model pools and set their endpoints.

    trunkline pools list
    trunkline pools show h100-eu-west
    trunkline pools create h100-eu-2 --model llama-3.1-8b-instruct --flavor h100 --region eu-west \\
        --capacity 4 --tokens-per-s 2400 --cost-per-hour 2.90 --burst
    trunkline pools update l40s-eu-long --min-prompt-tokens 2048   # placement by prompt length
    trunkline pools update h100-eu-gold --tiers gold             # placement by tier
    trunkline pools update h100-eu-2 --cost-per-hour flavor --capacity 8
    trunkline pools set-endpoints h100-eu-2 http://10.0.0.7:8000=tcp://10.0.0.7:5557 http://…
    trunkline pools set-endpoints h100-eu-2 http://10.0.0.7:8000=tcp://10.0.0.7:5557,tcp://10.0.0.7:5558

Changes are published to every gateway after commit. Output is JSON (``show``, ``create``,
``update``, ``set-endpoints``) or a table (``list``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec
from sqlalchemy.orm import Session

from trunkline.apps.runtime import Runtime
from trunkline.auth.secrets import without_password
from trunkline.cli.options import convert_options, option_of
from trunkline.cli.tenants import run_work
from trunkline.errors import InvalidRequest
from trunkline.kit.text import shown
from trunkline.pools import service
from trunkline.pools.endpoint_schemas import EndpointSpec
from trunkline.pools.schemas import Pool, PoolCreate, PoolUpdate

_FIELDS = (
    "model",
    "flavor",
    "region",
    "block_size",
    "capacity",
    "tokens_per_s",
    "cost_per_hour",
    "min_prompt_tokens",
    "max_prompt_tokens",
    "max_num_batched_tokens",
)


def register(sub: Any) -> None:
    parser = sub.add_parser("pools", help="model pools and their endpoints")
    commands = parser.add_subparsers(dest="pools_command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="every pool, one per line")
    listing.set_defaults(func=list_command)

    show = commands.add_parser("show", help="one pool as JSON")
    show.add_argument("name")
    show.set_defaults(func=show_command)

    create = commands.add_parser("create", help="create a pool")
    create.add_argument("name")
    _options(create, required=True)
    create.set_defaults(func=create_command)

    update = commands.add_parser("update", help="change some of a pool's fields")
    update.add_argument("name")
    _options(update, required=False)
    update.set_defaults(func=update_command)

    endpoints = commands.add_parser(
        "set-endpoints",
        help="replace a pool's endpoint list (URL, URL=KV_EVENTS_ADDRESS or "
        "URL=KV_EVENTS_ADDRESS,KV_REPLAY_ADDRESS)",
    )
    endpoints.add_argument("name")
    endpoints.add_argument(
        "endpoints", nargs="*", metavar="URL[=tcp://HOST:PORT[,tcp://HOST:PORT]]"
    )
    endpoints.add_argument(
        "--none",
        action="store_true",
        help="remove every endpoint (the pool serves nothing until it gets new ones)",
    )
    endpoints.set_defaults(func=set_endpoints_command)


def _options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--model", required=required, help="served model name")
    parser.add_argument("--flavor", required=required, help="accelerator flavor")
    parser.add_argument("--region", required=required)
    parser.add_argument("--block-size", type=int, help="engine KV block size (tokens)")
    parser.add_argument("--capacity", type=int, help="replicas the pool may run (0: endpoints)")
    parser.add_argument("--tokens-per-s", help="nominal output tokens/s per replica, or none")
    parser.add_argument("--cost-per-hour", help="per replica; 'flavor' for the flavor's price")
    parser.add_argument(
        "--min-prompt-tokens", type=int, help="placement: prefer this pool for prompts this long"
    )
    parser.add_argument(
        "--max-prompt-tokens", help="placement: prompts this long or longer go elsewhere; or none"
    )
    parser.add_argument(
        "--max-num-batched-tokens", help="the engines' vLLM setting, or none for the flavor's"
    )
    tiers = parser.add_mutually_exclusive_group()
    tiers.add_argument("--tiers", help="placement: the only tiers routed here, comma-separated")
    tiers.add_argument(
        "--every-tier", action="store_true", help="placement: open the pool to every tier"
    )
    burst = parser.add_mutually_exclusive_group()
    burst.add_argument("--burst", dest="burst", action="store_true", default=None)
    burst.add_argument("--no-burst", dest="burst", action="store_false")


def _given(args: argparse.Namespace) -> dict[str, Any]:
    raw: dict[str, Any] = {f: getattr(args, f) for f in _FIELDS if getattr(args, f) is not None}
    if args.burst is not None:
        raw["burst"] = args.burst
    if raw.get("cost_per_hour") in ("flavor", "none"):
        raw["cost_per_hour"] = None
    for field in ("tokens_per_s", "max_prompt_tokens", "max_num_batched_tokens"):
        if raw.get(field) == "none":
            raw[field] = None
    if args.tiers is not None:
        raw["tiers"] = [t.strip() for t in args.tiers.split(",") if t.strip()]
    elif args.every_tier:
        raw["tiers"] = None
    return raw


def _convert(raw: dict[str, Any], kind: type[msgspec.Struct]) -> Any:
    return convert_options(raw, kind, _option)


def _option(field: str) -> str:
    """How the command line spells a field: the option ``--min-prompt-tokens`` for
    ``min_prompt_tokens``; the pool's name is an argument."""
    return "the pool name" if field == "name" else option_of(field)


def list_command(_args: argparse.Namespace) -> int:
    pools = run_work(lambda session, _rt: service.list_pools(session).items)
    rows = [
        ("NAME", "MODEL", "FLAVOR", "REGION", "BURST", "$/H", "CAPACITY", "TOK/S", "PROMPTS",
         "TIERS", "ENDPOINTS"),
    ]  # fmt: skip
    rows += [
        (p.name, p.model, p.flavor, p.region, "yes" if p.burst else "no",
         f"{p.cost_per_hour:.2f}", str(p.capacity or "-"),
         "-" if p.tokens_per_s is None else f"{p.tokens_per_s:g}", _prompts(p),
         "*" if p.tiers is None else ",".join(p.tiers), str(len(p.endpoints)))
        for p in pools
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _prompts(pool: Pool) -> str:
    """The prompt lengths the pool is placed for: ``any``, ``2048-`` (and longer), ``-2048``
    (shorter), ``512-4096``."""
    low, high = pool.min_prompt_tokens, pool.max_prompt_tokens
    if not low and high is None:
        return "any"
    return f"{low or ''}-{'' if high is None else high}"


def show_command(args: argparse.Namespace) -> int:
    _print(run_work(lambda session, _rt: service.get_pool(session, args.name)))
    return 0


def create_command(args: argparse.Namespace) -> int:
    data = _convert({"name": args.name, **_given(args)}, PoolCreate)

    def work(session: Session, _runtime: Runtime) -> Pool:
        return service.create_pool(session, data)

    _print(run_work(work))
    return 0


def update_command(args: argparse.Namespace) -> int:
    data = _convert(_given(args), PoolUpdate)

    def work(session: Session, _runtime: Runtime) -> Pool:
        return service.update_pool(session, args.name, data)

    _print(run_work(work))
    return 0


def set_endpoints_command(args: argparse.Namespace) -> int:
    if bool(args.endpoints) == args.none:
        # Without either, a forgotten argument took every endpoint out of service.
        raise InvalidRequest(
            "give endpoints or --none, not both"
            if args.none
            else "give the pool's endpoints, or --none to remove every endpoint"
        )
    specs = [_endpoint(text) for text in args.endpoints]

    def work(session: Session, _runtime: Runtime) -> Pool:
        return service.set_pool_endpoints(session, args.name, specs)

    _print(run_work(work))
    return 0


_ENDPOINT_PARTS = {
    "url": "its URL",
    "kv_events": "its events address",
    "kv_replay": "its replay address",
}


def _endpoint(text: str) -> EndpointSpec:
    """One ``URL``, ``URL=KV_EVENTS_ADDRESS`` or ``URL=KV_EVENTS_ADDRESS,KV_REPLAY_ADDRESS``
    argument (named as given in an error: it is no option)."""
    url, _, addresses = text.partition("=")
    kv_events, _, kv_replay = addresses.partition(",")
    raw = {
        "url": url,
        "kv_events": kv_events or None,
        "kv_replay": kv_replay if "," in addresses else None,  # "URL=EVENTS,": refused, empty
    }
    try:
        spec: EndpointSpec = msgspec.convert(raw, EndpointSpec, strict=False)
    except msgspec.ValidationError as exc:
        reason, _, where = shown(str(exc)).partition(" - at `$.")
        part = _ENDPOINT_PARTS.get(where.rstrip("`"))
        named = without_password(text)  # as answers show it: an error may go to a CI log
        raise InvalidRequest(f"endpoint {named!r}: {part + ': ' if part else ''}{reason}") from exc
    return spec


def _print(pool: Pool) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(pool)).decode() + "\n")
