"""An engine whose KV block size is not its pool's is told of once, in the log, ``/health`` and
``/metrics``: prefix routing hashes prompts in the pool's size and would otherwise match none of
its cache without a word."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry
from tests.unit.gateway.test_endpoint_metrics import samples

from trunkline.gateway.endpoints import CacheConfig, EjectionPolicy, EndpointCollector, EngineState
from trunkline.gateway.endpoints.block_sizes import BlockSizeCheck, BlockSizes
from trunkline.gateway.endpoints.scan import MetricsScan, scan_cache_config
from trunkline.snapshot import EndpointEntry, PoolEntry, Snapshot

LOGGER = "trunkline.gateway.endpoints.block_sizes"


class World:
    """A snapshot of pools (by name: block size and endpoint ids) that a test may change."""

    def __init__(self, pools: dict[str, tuple[int, tuple[str, ...]]]) -> None:
        self.version = 0
        self.snapshot = Snapshot.empty()
        self.set(pools)

    def set(self, pools: dict[str, tuple[int, tuple[str, ...]]]) -> None:
        self.version += 1
        entries = {
            name: PoolEntry(
                name,
                "m",
                "h100",
                "eu",
                False,
                size,
                tuple(EndpointEntry(e, f"http://{e}") for e in ids),
            )
            for name, (size, ids) in pools.items()
        }
        self.snapshot = Snapshot(self.version, 0.0, {}, {}, {}, {}, entries)


class Engines:
    """EngineState with the check wired as the gateway's monitor wires it."""

    def __init__(self, world: World) -> None:
        self.state = EngineState(EjectionPolicy())
        self.check = BlockSizeCheck(lambda: world.snapshot, self.state)
        self.state.on_cache_config = lambda _endpoint: self.check.check()
        self.state.sync({e.id for p in world.snapshot.pools.values() for e in p.endpoints})
        self.reads = 0

    def scrape(self, endpoint: str, page: bytes, prompt_tokens: float = 100.0) -> None:
        def read() -> CacheConfig:
            self.reads += 1
            return scan_cache_config(page)

        scan = MetricsScan(prompt_tokens=prompt_tokens)
        self.state.scraped(endpoint, scan, self.state.now(), read)


def _page(block_size: int) -> bytes:
    return (
        b"vllm:num_requests_running 0\n"
        b'vllm:cache_config_info{block_size="%d",num_gpu_blocks="1000"} 1.0\n' % block_size
    )


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in _records(caplog) if r.levelno >= logging.WARNING]


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The check's own (others log too where the root logger says INFO)."""
    return [r for r in caplog.records if r.name == LOGGER]


def test_an_engine_of_another_block_size_is_warned_of_once_naming_the_fix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World({"p": (16, ("a", "b"))})
    engines = Engines(world)

    with caplog.at_level(logging.INFO, logger=LOGGER):
        engines.scrape("a", _page(32))
        engines.scrape("b", _page(16))
        for tokens in (200, 300):  # later scrapes: the page is not read for it again
            engines.scrape("a", _page(32), tokens)

    [warning] = _warnings(caplog)
    assert "endpoint a of pool p" in warning
    assert "KV block size is 32 but the pool's block_size is 16" in warning
    assert "set the pool's block_size to 32" in warning
    assert engines.reads == 2
    assert engines.check.mismatches() == [BlockSizes("a", "p", 32, 16)]


def test_equal_block_sizes_are_not_warned_of(caplog: pytest.LogCaptureFixture) -> None:
    world = World({"p": (16, ("a",)), "q": (32, ("b",))})
    engines = Engines(world)

    with caplog.at_level(logging.INFO, logger=LOGGER):
        engines.scrape("a", _page(16))
        engines.scrape("b", _page(32))

    assert _records(caplog) == []
    assert engines.check.mismatches() == []
    assert [s.agree for s in engines.check.compare()] == [True, True]


def test_a_restart_reads_the_block_size_again_and_warns_only_of_a_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World({"p": (16, ("a",))})
    engines = Engines(world)

    with caplog.at_level(logging.INFO, logger=LOGGER):
        engines.scrape("a", _page(16), 100)
        engines.scrape("a", _page(32), 5)  # counters went back: restarted with --block-size 32
        assert len(_warnings(caplog)) == 1
        engines.scrape("a", _page(32), 3)  # restarted again, same size: nothing new
        assert len(_warnings(caplog)) == 1
        engines.scrape("a", _page(64), 1)  # and once more, at yet another size

    assert engines.reads == 4
    assert ["is 32 but" in w for w in _warnings(caplog)] == [True, False]
    assert "is 64 but the pool's block_size is 16" in _warnings(caplog)[1]
    assert engines.check.mismatches() == [BlockSizes("a", "p", 64, 16)]


def test_setting_the_pools_block_size_clears_the_mismatch_and_a_new_one_is_warned_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World({"p": (16, ("a",)), "q": (16, ("a",))})  # one endpoint in two pools
    engines = Engines(world)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        engines.scrape("a", _page(32))
        assert len(_warnings(caplog)) == 2  # once per pool: each has its block_size to set

        world.set({"p": (32, ("a",)), "q": (16, ("a",))})  # the operator fixed p
        engines.check.check()  # the monitor does on each snapshot change
        assert engines.check.mismatches() == [BlockSizes("a", "q", 32, 16)]
        assert "now agree" in _records(caplog)[-1].getMessage()
        assert _records(caplog)[-1].levelno == logging.INFO

        world.set({"p": (64, ("a",)), "q": (16, ("a",))})  # and set it wrong again
        engines.check.check()

    assert len(_warnings(caplog)) == 3
    assert "endpoint a of pool p" in _warnings(caplog)[-1]


def test_metrics_show_each_engines_block_size_and_mismatch_per_pool() -> None:
    world = World({"p": (16, ("a", "b", "c"))})
    engines = Engines(world)
    registry = CollectorRegistry()
    registry.register(EndpointCollector(engines.state, engines.check))
    engines.scrape("a", _page(32))
    engines.scrape("b", _page(16))

    got = samples(registry)

    a, b, c = ((("endpoint", e),) for e in "abc")
    assert got["trunkline_endpoint_block_size", a] == 32
    assert got["trunkline_endpoint_block_size", b] == 16
    assert ("trunkline_endpoint_block_size", c) not in got  # not scraped yet
    assert got["trunkline_endpoint_block_size_mismatch", (*a, ("pool", "p"))] == 1.0
    assert got["trunkline_endpoint_block_size_mismatch", (*b, ("pool", "p"))] == 0.0
    assert ("trunkline_endpoint_block_size_mismatch", (*c, ("pool", "p"))) not in got
