"""Composition roots of the production processes (PostgreSQL + Redis).

uvicorn imports these factories in each worker process, so each reads the
settings from the environment itself.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from pathlib import Path

import redis.asyncio as aioredis
from litestar import Litestar
from prometheus_client import CollectorRegistry, start_http_server

from trunkline.apps.controlplane import create_controlplane_app
from trunkline.apps.gateway import create_gateway_app
from trunkline.apps.runtime import (
    REDIS_TIMEOUT_S,
    build_runtime,
    previous_secrets,
    require_schema,
    server_secret,
)
from trunkline.errors import ConfigurationError
from trunkline.kit import logging as tlog
from trunkline.kit.metrics_share import WORKERS_METRICS_DIR_ENV
from trunkline.kit.redis_errors import redis_unavailable
from trunkline.kit.redis_eviction import warn_if_redis_evicts
from trunkline.kit.shutdown_delay import ShutdownDelay
from trunkline.metering.consumer import UsageConsumer
from trunkline.metering.consumer_metrics import ConsumerCollector
from trunkline.metering.redis_stream import (
    RedisUsageEmitter,
    RedisUsageReader,
    create_usage_group,
    reader_client,
    stream_name,
)
from trunkline.quota.redis_store import RedisQuotaStore
from trunkline.quota.redis_store import connect as connect_quota_store
from trunkline.settings import Settings, load_settings
from trunkline.snapshot import RedisSnapshotSource
from trunkline.worker.jobs import load_job_settings

log = logging.getLogger(__name__)


def usage_stream_name(settings: Settings) -> str:
    return stream_name(settings.redis.key_prefix)


def _redis_url(settings: Settings) -> str:
    if not settings.redis.url:
        raise ConfigurationError("TRUNKLINE_REDIS__URL is required for this process")
    return settings.redis.url


def gateway_app() -> Litestar:
    settings = load_settings()
    settings.check_production("gateway")
    tlog.configure(settings.log_level, json_lines=settings.log_json)
    # Bounded: a Redis that stops answering (frozen, a partition) is noticed in seconds by
    # /health and the usage emitter, not after the client's default of minutes per call.
    client = aioredis.Redis.from_url(
        _redis_url(settings), socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
    )
    quota_client = connect_quota_store(_redis_url(settings), settings.gateway.quota.store_timeout_s)
    warn_if_redis_evicts(_redis_url(settings), timeout_s=REDIS_TIMEOUT_S)
    shared_dir = os.environ.get(WORKERS_METRICS_DIR_ENV)  # set by `trunkline gateway --workers N`
    return create_gateway_app(
        source=RedisSnapshotSource(client, settings.redis.key_prefix),
        emitter=RedisUsageEmitter(client, usage_stream_name(settings)),
        server_secret=server_secret(settings),
        previous_secrets=previous_secrets(settings),
        settings=settings.gateway,
        quota_store=RedisQuotaStore(quota_client, settings.redis.key_prefix),
        workers_metrics_dir=Path(shared_dir) if shared_dir else None,
        shutdown_delay=ShutdownDelay(
            settings.gateway.shutdown_delay_s, drain_timeout_s=settings.gateway.drain_timeout_s
        ),
    )


def controlplane_app() -> Litestar:
    settings = load_settings()
    settings.check_production("controlplane")
    tlog.configure(settings.log_level, json_lines=settings.log_json)
    runtime = require_schema(build_runtime(settings))
    if settings.redis.url:
        warn_if_redis_evicts(settings.redis.url, timeout_s=REDIS_TIMEOUT_S)
        prepare_usage_stream(settings.redis.url, usage_stream_name(settings))
    # A restarted control plane re-publishes what the database says; with Redis not up yet it
    # starts all the same and publishes once Redis answers (republish_if_stale).
    runtime.publish()
    shared_dir = os.environ.get(WORKERS_METRICS_DIR_ENV)  # `trunkline controlplane --workers N`
    cp = settings.controlplane
    return create_controlplane_app(
        runtime,
        workers_metrics_dir=Path(shared_dir) if shared_dir else None,
        shutdown_delay=ShutdownDelay(cp.shutdown_delay_s, drain_timeout_s=cp.drain_timeout_s),
    )


def prepare_usage_stream(url: str, stream: str) -> None:
    """The usage stream's consumer group, made before any gateway writes (a fresh install's
    gateways may fill Redis before the first worker runs, and Redis refuses a group then);
    best effort: a Redis not up yet gets it from the first worker, as before."""
    client = reader_client(url)
    try:
        create_usage_group(client, stream)
    except Exception as exc:
        if not redis_unavailable(exc):
            raise
        log.info("usage stream's consumer group not made now (%s); the workers make it", exc)
    finally:
        client.close()


def run_worker(
    settings: Settings, *, idle_sleep_s: float = 0.2, max_batches: int | None = None
) -> None:
    """Drain the usage stream into the ledger until SIGTERM / SIGINT (or ``max_batches``)."""
    runtime = require_schema(build_runtime(settings))
    jobs = load_job_settings()
    client = reader_client(_redis_url(settings))
    warn_if_redis_evicts(_redis_url(settings), timeout_s=REDIS_TIMEOUT_S)
    consumer_name = f"{socket.gethostname()}-{os.getpid()}"
    reader = RedisUsageReader(
        client,
        usage_stream_name(settings),
        consumer=consumer_name,
        claim_idle_ms=jobs.claim_idle_ms,
    )
    consumer = UsageConsumer(
        reader,
        runtime.session_factory,
        batch_size=jobs.ingest_batch,
        max_ahead_s=jobs.usage_clock_skew_s,
    )
    if jobs.metrics_port is not None:
        registry = CollectorRegistry()
        registry.register(ConsumerCollector(consumer, reader))
        start_http_server(jobs.metrics_port, jobs.metrics_host, registry)
        log.info("worker metrics on http://%s:%s/metrics", jobs.metrics_host, jobs.metrics_port)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: consumer.stop.set())
    try:
        if max_batches is None:
            consumer.run(idle_sleep_s)
        else:
            for _ in range(max_batches):
                consumer.step()
    finally:
        client.close()
        runtime.close()
