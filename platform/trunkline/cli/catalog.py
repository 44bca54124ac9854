"""``trunkline catalog``: delete a model or an alias by its exact name.

    trunkline catalog delete-model 'org/model/'
    trunkline catalog delete-alias 'org//model'

The API reaches both too (``DELETE /api/v1/catalog/models/{name}``), but not a name with a
trailing or doubled ``/`` or a ``.`` or ``..`` part, which versions before 2026-12-07 took:
the router, or the client normalising the URL, loses those parts, even sent as ``%2F``. The
command line names no URL, so it is the way out for such rows. The refusals are the API's
(a model still served by pools, or escalated to by a cascade); changes are published to every
gateway after commit.
"""

from __future__ import annotations

import argparse
from typing import Any

from trunkline.cli.tenants import run_work
from trunkline.pools import catalog_models


def register(sub: Any) -> None:
    parser = sub.add_parser("catalog", help="delete a model or alias by its exact name")
    commands = parser.add_subparsers(dest="catalog_command", required=True, metavar="COMMAND")

    model = commands.add_parser(
        "delete-model", help="delete a model and its own aliases (not while pools serve it)"
    )
    model.add_argument("name", help="the model's served name, exactly as stored")
    model.set_defaults(func=delete_model_command)

    alias = commands.add_parser(
        "delete-alias", help="delete an alias; tenants lose their entitlement to it"
    )
    alias.add_argument("alias", help="the alias, exactly as stored")
    alias.set_defaults(func=delete_alias_command)


def delete_model_command(args: argparse.Namespace) -> int:
    run_work(lambda session, _rt: catalog_models.delete_model(session, args.name))
    print(f"model {args.name!r} deleted")
    return 0


def delete_alias_command(args: argparse.Namespace) -> int:
    run_work(lambda session, _rt: catalog_models.remove_alias(session, args.alias))
    print(f"alias {args.alias!r} deleted")
    return 0
