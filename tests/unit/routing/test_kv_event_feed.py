"""The fleet simulator's hook: simulated engines' KV-cache events feed a precise index."""

from __future__ import annotations

from trunkline.fleet.results import OutcomeCollector, RequestOutcome
from trunkline.fleet.simulator import _build_endpoints
from trunkline.fleet.spec import DEFAULT_TIERS, FleetSpec, PoolSpec
from trunkline.gateway.routing import KvEventIndex
from trunkline.workloads import Prompt, segment, stable_key


def test_engines_report_the_blocks_they_cache_to_the_precise_index() -> None:
    spec = FleetSpec(pools=(PoolSpec("pool", "h100", 2),))
    index = KvEventIndex()
    collector = OutcomeCollector(DEFAULT_TIERS)
    collector.add(RequestOutcome("r1", "tenant", "silver", 0.0))
    endpoints = _build_endpoints(spec, collector, True, index)
    prompt = Prompt(segment(stable_key("feed", 1), 100))
    hashes = prompt.block_hashes(16)
    assert len(hashes) == 6
    engine = endpoints["pool/1"].engine
    engine.submit("r1", prompt.token_ids, 4, 0.0, block_hashes=hashes)
    engine.drain()
    assert index.matches(hashes, None, ["pool/0", "pool/1"]) == [0, 6]
