"""A warning, at start, when Redis may evict what Trunkline keeps in it.

Every key Trunkline writes is state it needs until it deletes it or it expires: the snapshot's
parts (rarely read, so the first an LRU policy evicts: new gateways then answer 503 and the
control plane rebuilds every check), quota windows and concurrency leases (their TTLs make
them candidates for every ``volatile-*`` policy: a tenant evicted mid-window gets a fresh
quota), the usage stream. Only ``noeviction`` keeps them; Redis' own default is that, but
managed offerings often ship ``volatile-lru`` or ``allkeys-lru``. Operators are told once per
process, at its start, naming the policy; nothing is refused (the policy can be changed while
Redis runs, and some managed Redis services do not let a client read its configuration at
all). A Redis without ``maxmemory`` never evicts, whatever its policy.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import redis

from trunkline.kit.redis_errors import redis_unavailable
from trunkline.kit.redis_replies import reply_text

log = logging.getLogger(__name__)

SAFE_POLICY = "noeviction"


class _ConfigReader(Protocol):
    def config_get(self, pattern: str = ...) -> Any: ...


def eviction_warning(client: _ConfigReader) -> str | None:
    """What to tell the operator about ``client``'s Redis eviction policy, or None when it
    keeps every key (or cannot be read: ``CONFIG`` disabled or renamed, Redis not up yet)."""
    try:
        found = client.config_get("maxmemory*")
    except redis.ResponseError:  # CONFIG disabled or renamed: a managed service's choice
        return None
    except Exception as exc:  # an outage here is the process's to handle later
        if redis_unavailable(exc):
            return None
        raise
    policy = reply_text(found.get("maxmemory-policy") or found.get(b"maxmemory-policy") or "")
    memory = reply_text(found.get("maxmemory") or found.get(b"maxmemory") or "")
    if not policy or policy == SAFE_POLICY or memory in ("", "0"):
        return None  # without maxmemory Redis never evicts
    return (
        f"Redis evicts keys under maxmemory-policy {policy} (maxmemory {memory} bytes): "
        "it may drop the "
        "configuration snapshot's parts, quota windows and concurrency leases, and the usage "
        f"stream; set maxmemory-policy {SAFE_POLICY} (and size maxmemory for the usage stream)"
    )


def warn_if_redis_evicts(url: str, *, timeout_s: float) -> str | None:
    """Log :func:`eviction_warning` for the Redis at ``url`` once; returns what was logged."""
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        warning = eviction_warning(client)
    finally:
        client.close()
    if warning:
        log.warning("%s", warning)
    return warning
