"""Entry point of the ``trunkline`` command: one sub-command per module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from trunkline.errors import TrunklineError


def build_parser() -> argparse.ArgumentParser:
    from trunkline.cli import bench, billing, keys, pools, quota, servers, tenants

    parser = argparse.ArgumentParser(
        prog="trunkline", description="Trunkline: multitenant Models-as-a-Service."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    servers.register(sub)
    tenants.register(sub)
    keys.register(sub)
    pools.register(sub)
    quota.register(sub)
    bench.register(sub)
    billing.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TrunklineError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
