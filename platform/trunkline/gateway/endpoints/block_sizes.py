"""Whether each engine's KV block size is its pool's.

Prefix routing hashes prompts in the pool's ``block_size`` (the approximate index, and the
precise one reading vLLM's KV events); the engine names its cached blocks in its own. When they
differ no hash ever matches: routing goes on, blind to every cache, and nothing fails. The
engine's size is on its ``/metrics`` page (``vllm:cache_config_info``), read once per endpoint and
again after a restart (:meth:`EngineState.scraped`). :class:`BlockSizeCheck` compares it with the
pool's when it is read and when the configuration changes, logs one warning per endpoint and pool
that disagree (again only when either size changes), and reports them for ``/health`` and
``/metrics``. Routing is left as it is: the pool's size is the operator's to set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import NamedTuple

from trunkline.gateway.endpoints.state import EngineState
from trunkline.snapshot import Snapshot

__all__ = ["BlockSizeCheck", "BlockSizes", "compare_block_sizes"]

log = logging.getLogger(__name__)


class BlockSizes(NamedTuple):
    """One endpoint of one pool: its engine's block size and the pool's."""

    endpoint: str
    pool: str
    engine_block_size: int
    pool_block_size: int

    @property
    def agree(self) -> bool:
        return self.engine_block_size == self.pool_block_size


def compare_block_sizes(snapshot: Snapshot, engines: Mapping[str, int]) -> list[BlockSizes]:
    """Every endpoint of every pool whose engine's block size is known (``engines``, by
    endpoint id), by endpoint then pool."""
    found = [
        BlockSizes(endpoint.id, pool.name, engines[endpoint.id], pool.block_size)
        for pool in snapshot.pools.values()
        for endpoint in pool.endpoints
        if endpoint.id in engines
    ]
    return sorted(found)


class BlockSizeCheck:
    """Compares the engines' block sizes (``engines``) with their pools' in the current
    ``snapshot``; :meth:`check` logs what changed, :meth:`mismatches` reports."""

    def __init__(self, snapshot: Callable[[], Snapshot], engines: EngineState) -> None:
        self._snapshot = snapshot
        self._engines = engines
        self._warned: dict[tuple[str, str], tuple[int, int]] = {}
        """(endpoint, pool) -> (engine's, pool's) sizes last warned of."""

    def compare(self) -> list[BlockSizes]:
        return compare_block_sizes(self._snapshot(), self._engines.block_sizes())

    def mismatches(self) -> list[BlockSizes]:
        """The endpoints, per pool, whose engine's block size is not the pool's."""
        return [sizes for sizes in self.compare() if not sizes.agree]

    def check(self) -> None:
        """Log each disagreement not logged yet (or whose sizes changed since), and each one
        logged that the engine's or the pool's size has since resolved. Run when an engine's
        size was read and when the configuration changed: never per request or per scrape."""
        warned = self._warned
        seen: set[tuple[str, str]] = set()
        for sizes in self.compare():
            key = (sizes.endpoint, sizes.pool)
            seen.add(key)
            if sizes.agree:
                if warned.pop(key, None) is not None:
                    log.info(
                        "endpoint %s of pool %s: KV block sizes now agree (%s); prefix routing "
                        "can match its cache again",
                        sizes.endpoint,
                        sizes.pool,
                        sizes.pool_block_size,
                        extra={"endpoint_id": sizes.endpoint, "pool": sizes.pool},
                    )
                continue
            pair = (sizes.engine_block_size, sizes.pool_block_size)
            if warned.get(key) == pair:
                continue
            warned[key] = pair
            log.warning(
                "endpoint %s of pool %s: its engine's KV block size is %s but the pool's "
                "block_size is %s, so prefix routing matches none of its cache; set the pool's "
                "block_size to %s (or start the engine with --block-size %s)",
                sizes.endpoint,
                sizes.pool,
                sizes.engine_block_size,
                sizes.pool_block_size,
                sizes.engine_block_size,
                sizes.pool_block_size,
                extra={
                    "endpoint_id": sizes.endpoint,
                    "pool": sizes.pool,
                    "engine_block_size": sizes.engine_block_size,
                    "pool_block_size": sizes.pool_block_size,
                },
            )
        for gone in warned.keys() - seen:  # left the pool, or not read since its restart
            del warned[gone]
