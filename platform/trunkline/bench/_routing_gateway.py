"""A real gateway in front of several vLLM replicas, for the real-vLLM routing benchmark.

Run as ``python -m trunkline.bench._routing_gateway --engine URL[,KV] … --port P --key-file F``.

It serves :func:`~trunkline.apps.gateway.create_gateway_app` under uvicorn, as ``trunkline
gateway`` does, from an in-memory snapshot with one tenant, key, alias and one pool holding
every ``--engine`` (an optional ``,tcp://…`` after the URL names its KV-event publisher). The
gateway's settings come from the environment as in production, so the routing policy is
``TRUNKLINE_GATEWAY__ROUTING_POLICY``; ``--host``/``--port`` override the listening address.
"""

from __future__ import annotations

import argparse
import secrets
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from trunkline.auth.secrets import API_KEY_PREFIX, issue
from trunkline.bench._gateway_server import BenchWorld, write_secret_file
from trunkline.snapshot import (
    AliasEntry,
    EndpointEntry,
    KeyEntry,
    PoolEntry,
    Snapshot,
    TenantEntry,
    TierEntry,
)

__all__ = ["build_pool_snapshot", "parse_engine"]

POOL = "vllm-cpu"
REGION = "local"


def parse_engine(text: str, index: int) -> EndpointEntry:
    url, _, kv_events = text.partition(",")
    return EndpointEntry(f"vllm-{index}", url, kv_events or None)


def build_pool_snapshot(
    *,
    engines: Sequence[EndpointEntry],
    model: str,
    alias: str,
    block_size: int,
    server_secret: bytes,
) -> BenchWorld:
    """Version-1 snapshot in which one fresh key may call ``alias`` on the pool ``engines``."""
    if not engines:
        raise ValueError("the gateway needs at least one --engine")
    tenant_id, project_id = str(uuid.uuid4()), str(uuid.uuid4())
    issued = issue(server_secret, API_KEY_PREFIX)
    tier = TierEntry("gold", 100, 60_000, None, True)
    tenant = TenantEntry(tenant_id, "bench", tier.name, (), frozenset({alias}))
    key = KeyEntry(issued.public_id, issued.digest, tenant_id, project_id, None, None, None)
    pool = PoolEntry(POOL, model, "xeon", REGION, False, block_size, tuple(engines))
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


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--engine", action="append", required=True, help="URL[,KV_EVENTS]")
    parser.add_argument("--model", required=True, help="model name the engines serve")
    parser.add_argument("--alias", default="bench-chat", help="alias clients call")
    parser.add_argument("--block-size", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key-file", type=Path, required=True, help="where to write the key")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    from trunkline.apps.gateway import create_gateway_app
    from trunkline.metering.stream import InMemoryUsageStream
    from trunkline.settings import Settings
    from trunkline.snapshot import InMemorySnapshotStore, encode_snapshot

    args = _parse(argv)
    server_secret = secrets.token_bytes(32)
    world = build_pool_snapshot(
        engines=[parse_engine(text, i) for i, text in enumerate(args.engine)],
        model=args.model,
        alias=args.alias,
        block_size=args.block_size,
        server_secret=server_secret,
    )
    store = InMemorySnapshotStore()
    store.publish(store.next_version(), encode_snapshot(world.snapshot))
    write_secret_file(args.key_file, world.api_key)
    settings = Settings().gateway.model_copy(update={"host": args.host, "port": args.port})
    app = create_gateway_app(
        source=store,
        emitter=InMemoryUsageStream(),
        server_secret=server_secret,
        settings=settings,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
