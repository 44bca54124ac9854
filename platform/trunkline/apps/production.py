"""Composition roots of the production processes (PostgreSQL + Redis).

uvicorn imports these factories in each worker process, so each reads the
settings from the environment itself.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import redis
import redis.asyncio as aioredis
from litestar import Litestar

from trunkline.apps.controlplane import create_controlplane_app
from trunkline.apps.gateway import create_gateway_app
from trunkline.apps.runtime import build_runtime, server_secret
from trunkline.errors import ConfigurationError
from trunkline.kit import logging as tlog
from trunkline.metering.ingest import ingest_once
from trunkline.metering.stream import RedisUsageEmitter, RedisUsageReader
from trunkline.settings import Settings, load_settings
from trunkline.snapshot import RedisSnapshotSource

log = logging.getLogger(__name__)


def usage_stream_name(settings: Settings) -> str:
    return f"{settings.redis.key_prefix}:usage"


def _redis_url(settings: Settings) -> str:
    if not settings.redis.url:
        raise ConfigurationError("TRUNKLINE_REDIS__URL is required for this process")
    return settings.redis.url


def gateway_app() -> Litestar:
    settings = load_settings()
    settings.check_production()
    tlog.configure(settings.log_level, json_lines=settings.log_json)
    client = aioredis.Redis.from_url(_redis_url(settings))
    return create_gateway_app(
        source=RedisSnapshotSource(client, settings.redis.key_prefix),
        emitter=RedisUsageEmitter(client, usage_stream_name(settings)),
        server_secret=server_secret(settings),
        settings=settings.gateway,
    )


def controlplane_app() -> Litestar:
    settings = load_settings()
    tlog.configure(settings.log_level, json_lines=settings.log_json)
    runtime = build_runtime(settings)
    runtime.publish()  # a restarted control plane re-publishes what the database says
    return create_controlplane_app(runtime)


def run_worker(
    settings: Settings, *, idle_sleep_s: float = 0.2, max_batches: int | None = None
) -> None:
    """Drain the usage stream into the ledger until interrupted."""
    runtime = build_runtime(settings)
    client = redis.Redis.from_url(_redis_url(settings))
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    reader = RedisUsageReader(client, usage_stream_name(settings), consumer=consumer)
    batches = 0
    try:
        while max_batches is None or batches < max_batches:
            batches += 1
            try:
                moved = ingest_once(reader, runtime.session_factory)
            except (redis.ConnectionError, OSError):
                log.warning("usage ingest: Redis unavailable, retrying")
                moved = 0
            if not moved:
                time.sleep(idle_sleep_s)
    finally:
        client.close()
        runtime.close()
