"""KV-cache events: what the core emits matches what its prefix cache holds and hits."""

from __future__ import annotations

from collections.abc import Sequence

from tests.unit.engines.helpers import run_until_idle, tiny_profile

from trunkline.engines import (
    BlockRemoved,
    BlockStored,
    EngineCore,
    KVCacheEvent,
    prefix_block_hashes,
)

BLOCK = 4


def prompt(start: int, length: int) -> list[int]:
    return list(range(start, start + length))


class Recorder:
    def __init__(self) -> None:
        self.batches: list[tuple[float, list[KVCacheEvent]]] = []

    def __call__(self, now: float, events: Sequence[KVCacheEvent]) -> None:
        self.batches.append((now, list(events)))

    @property
    def events(self) -> list[KVCacheEvent]:
        return [event for _, batch in self.batches for event in batch]

    def resident(self) -> set[int]:
        """The hashes a subscriber believes cached after replaying every event."""
        cached: set[int] = set()
        for event in self.events:
            if isinstance(event, BlockStored):
                assert not cached & set(event.block_hashes), "stored twice without removal"
                cached.update(event.block_hashes)
            elif isinstance(event, BlockRemoved):
                assert set(event.block_hashes) <= cached, "removed a block never stored"
                cached.difference_update(event.block_hashes)
        return cached


def test_a_prompt_stores_its_full_blocks_chained_with_their_tokens() -> None:
    recorder = Recorder()
    core = EngineCore(tiny_profile(), kv_event_sink=recorder)
    tokens = prompt(100, 10)  # two full blocks and a partial one
    core.add_request("a", tokens, 1, 0.0)
    core.step(0.0)
    stored = recorder.events[0]
    assert isinstance(stored, BlockStored)
    assert list(stored.block_hashes) == prefix_block_hashes(tokens, BLOCK)
    assert stored.parent_block_hash is None
    assert list(stored.token_ids) == tokens[:8]
    assert stored.block_size == BLOCK
    assert recorder.batches[0][0] > 0.0  # stamped with the end of the step


def test_decode_blocks_are_stored_as_they_fill_with_their_parent() -> None:
    recorder = Recorder()
    core = EngineCore(tiny_profile(), kv_event_sink=recorder)
    core.add_request("a", prompt(100, 4), 6, 0.0)
    run_until_idle(core)
    stored = [e for e in recorder.events if isinstance(e, BlockStored)]
    assert len(stored) == 2  # the prompt's block, then the block of 4 generated tokens
    assert stored[1].parent_block_hash == stored[0].block_hashes[-1]


def test_eviction_emits_removed_for_exactly_the_evicted_hashes() -> None:
    recorder = Recorder()
    # 6 blocks: the third 9-token request reuses the blocks of the least recently used one.
    core = EngineCore(tiny_profile(kv_cache_blocks=6, max_model_len=24), kv_event_sink=recorder)
    for name, start in (("a", 100), ("b", 200), ("c", 300)):
        core.add_request(name, prompt(start, 9), 1, 0.0)
        run_until_idle(core)
    removed = [h for e in recorder.events if isinstance(e, BlockRemoved) for h in e.block_hashes]
    assert set(removed) == set(prefix_block_hashes(prompt(100, 9), BLOCK))
    assert recorder.resident() == core.kv.pool.cached_hashes()


def test_events_replayed_by_a_subscriber_match_the_cache_and_explain_every_hit() -> None:
    recorder = Recorder()
    core = EngineCore(tiny_profile(kv_cache_blocks=12, max_model_len=40), kv_event_sink=recorder)
    shared = prompt(100, 8)
    for index in range(12):
        tokens = shared + prompt(1000 * (index % 5), 5 + index % 3)
        core.add_request(f"r{index}", tokens, 3 + index % 4, 0.0)
        hits_before = core.prefix_cache_hits
        resident_before = recorder.resident()
        run_until_idle(core)
        if core.prefix_cache_hits > hits_before:
            assert prefix_block_hashes(shared, BLOCK)[0] in resident_before
    assert recorder.resident() == core.kv.pool.cached_hashes()
    assert core.prefix_cache_hits > 0


def test_no_sink_means_no_events_are_kept() -> None:
    core = EngineCore(tiny_profile())
    core.add_request("a", prompt(100, 9), 2, 0.0)
    run_until_idle(core)
    assert core.kv.pool.events is None
