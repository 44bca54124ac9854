"""Processes warn at start when their Redis may evict Trunkline's keys (a real Redis 7)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis

from support.servers import free_port
from trunkline.kit.redis_eviction import warn_if_redis_evicts

pytestmark = pytest.mark.integration


@pytest.fixture
def configured(redis_url: str) -> Iterator[redis.Redis]:
    """The session Redis, its memory settings put back after the test."""
    client = redis.Redis.from_url(redis_url)
    before = client.config_get("maxmemory*")
    try:
        yield client
    finally:
        client.config_set("maxmemory-policy", before["maxmemory-policy"])
        client.config_set("maxmemory", before["maxmemory"])
        client.close()


def test_an_evicting_policy_under_maxmemory_is_named_in_a_warning(
    configured: redis.Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A managed Redis shipped with ``allkeys-lru`` evicts the snapshot's parts first (rarely
    read): new gateways then answer 503 and the control plane rebuilds at every check, with
    nothing said by the control plane; ``volatile-*`` takes quota windows (they expire) and
    hands a tenant a fresh quota."""
    configured.config_set("maxmemory", 100 * 1024 * 1024)
    for policy in ("allkeys-lru", "volatile-ttl"):
        configured.config_set("maxmemory-policy", policy)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="trunkline.kit.redis_eviction"):
            said = warn_if_redis_evicts(redis_url, timeout_s=2.0)
        assert said is not None
        assert f"maxmemory-policy {policy}" in said and "set maxmemory-policy noeviction" in said
        assert [r.getMessage() for r in caplog.records] == [said]


def test_a_redis_that_keeps_every_key_gets_no_warning(
    configured: redis.Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    configured.config_set("maxmemory", 100 * 1024 * 1024)
    configured.config_set("maxmemory-policy", "noeviction")
    assert warn_if_redis_evicts(redis_url, timeout_s=2.0) is None
    # No maxmemory: Redis never evicts, whatever the policy says.
    configured.config_set("maxmemory", 0)
    configured.config_set("maxmemory-policy", "allkeys-lru")
    with caplog.at_level(logging.WARNING, logger="trunkline.kit.redis_eviction"):
        assert warn_if_redis_evicts(redis_url, timeout_s=2.0) is None
    assert caplog.records == []


def test_a_redis_not_up_yet_does_not_stop_a_process_from_starting() -> None:
    """Every process starts while Redis is down and works once it answers; the check is
    best effort and says nothing then."""
    assert warn_if_redis_evicts(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5) is None
