"""A real gateway in front of one engine, for benchmarks.

Run as ``python -m trunkline.bench._gateway_server --engine-url URL --port P --key-file F …``.

It serves :func:`~trunkline.apps.gateway.create_gateway_app` under uvicorn, as ``trunkline
gateway`` does, but from an in-memory snapshot with one tier, tenant, key, alias and pool, so it
needs neither Redis nor a database. The key's plaintext is written to ``--key-file`` (mode 0600)
before the server starts; the server secret is random and never leaves the process.
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

POOL = "bench-pool"
REGION = "local"


class BenchWorld(NamedTuple):
    snapshot: Snapshot
    api_key: str


def build_snapshot(
    *,
    engine_url: str,
    model: str,
    alias: str,
    accelerator: str,
    block_size: int,
    server_secret: bytes,
) -> BenchWorld:
    """Version-1 snapshot in which one fresh key may call ``alias`` on the engine."""
    tenant_id, project_id = str(uuid.uuid4()), str(uuid.uuid4())
    issued = issue(server_secret, API_KEY_PREFIX)
    tier = TierEntry("gold", 100, 500, 50, True)
    tenant = TenantEntry(tenant_id, "bench", tier.name, (), frozenset({alias}))
    key = KeyEntry(issued.public_id, issued.digest, tenant_id, project_id, None, None, None)
    endpoint = EndpointEntry("engine-0", engine_url)
    pool = PoolEntry(POOL, model, accelerator, REGION, False, block_size, (endpoint,))
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
    parser.add_argument("--engine-url", required=True, help="base URL of the engine")
    parser.add_argument("--model", required=True, help="model name the engine serves")
    parser.add_argument("--alias", default="bench-chat", help="alias clients call")
    parser.add_argument("--profile", default="h100", help="engine accelerator profile")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key-file", type=Path, required=True, help="where to write the key")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    from trunkline.apps.gateway import create_gateway_app
    from trunkline.engines import get_profile
    from trunkline.metering.stream import InMemoryUsageStream
    from trunkline.settings import GatewaySettings
    from trunkline.snapshot import InMemorySnapshotStore, encode_snapshot

    args = _parse(argv)
    profile = get_profile(args.profile)
    server_secret = secrets.token_bytes(32)
    world = build_snapshot(
        engine_url=args.engine_url,
        model=args.model,
        alias=args.alias,
        accelerator=profile.name,
        block_size=profile.block_size,
        server_secret=server_secret,
    )
    store = InMemorySnapshotStore()
    store.publish(store.next_version(), encode_snapshot(world.snapshot))
    write_secret_file(args.key_file, world.api_key)
    app = create_gateway_app(
        source=store,
        emitter=InMemoryUsageStream(),
        server_secret=server_secret,
        settings=GatewaySettings(host=args.host, port=args.port),
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
