"""prefix-affinity, approximate (learned from routed) and precise (fed by KV-cache events)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.unit.routing.helpers import endpoint, request, text

from trunkline.engines.events import AllBlocksCleared, BlockRemoved, BlockStored
from trunkline.gateway.routing import (
    ApproxPrefixIndex,
    KvEventIndex,
    TextPrompt,
    apply_kv_events,
)
from trunkline.gateway.routing.prefix_scorer import PrefixAffinityScorer

ENDPOINTS = [endpoint("e0"), endpoint("e1"), endpoint("e2")]


def approximate(capacity_tokens: int = 1_000_000) -> PrefixAffinityScorer:
    return PrefixAffinityScorer(ApproxPrefixIndex(capacity_tokens))


@pytest.mark.parametrize(
    ("routed", "asked", "expected"),
    [
        ([], text("a", "b"), [0.0, 0.0, 0.0]),  # nothing learned yet
        ([(text("a", "b"), 1)], text("a", "b"), [0.0, 1.0, 0.0]),
        ([(text("a", "b"), 1)], text("a", "b", "c", "d"), [0.0, 0.5, 0.0]),  # 2 of 4 blocks
        ([(text("a"), 0), (text("a", "b", "c"), 2)], text("a", "b", "x"), [1 / 3, 0.0, 2 / 3]),
        ([(text("x", "b"), 1)], text("a", "b"), [0.0, 0.0, 0.0]),  # same block, other parent
    ],
)
def test_approximate_scores_the_share_of_leading_blocks_routed_there(
    routed: list[tuple[str, int]], asked: str, expected: list[float]
) -> None:
    scorer = approximate()
    for prompt, target in routed:
        scorer.routed(request(prompt), ENDPOINTS[target])
    assert scorer.score(request(asked), ENDPOINTS) == pytest.approx(expected)


def test_endpoints_of_different_block_sizes_score_the_share_of_the_prompt_they_hold() -> None:
    """An alias over an H100 pool (16-token blocks) and one of larger blocks (32 here; Gaudi's
    vLLM uses 128): a 48-token prompt is three blocks on the first and one on the second (its
    last 16 tokens make no full block). Each holding all its own blocks, both scored 1 — a
    coin toss — though the first holds 48 tokens of it and the second 32."""
    small, large = endpoint("h100", block_size=16), endpoint("gaudi", block_size=32)
    scorer = approximate()
    prompt = text("a", "b", "c")
    scorer.routed(request(prompt), small)
    scorer.routed(request(prompt), large)

    assert scorer.score(request(prompt), [small, large]) == pytest.approx([1.0, 2 / 3])


def test_a_salted_request_never_matches_blocks_routed_under_another_salt() -> None:
    scorer = approximate()
    scorer.routed(request(text("a", "b"), salt="tenant-1"), ENDPOINTS[0])
    scorer.routed(request(text("a", "b")), ENDPOINTS[1])
    assert scorer.score(request(text("a", "b"), salt="tenant-1"), ENDPOINTS) == [1.0, 0.0, 0.0]
    assert scorer.score(request(text("a", "b"), salt="tenant-2"), ENDPOINTS) == [0.0, 0.0, 0.0]
    assert scorer.score(request(text("a", "b")), ENDPOINTS) == [0.0, 1.0, 0.0]


def test_the_salt_isolates_even_when_the_prompt_view_ignores_it() -> None:
    # A prompt view that hashes without the salt: the index keys blocks by salt as well.
    scorer = approximate()
    unsalted = TextPrompt(text("a", "b"))
    scorer.routed(replace(request(salt="tenant-1"), prompt=unsalted), ENDPOINTS[0])
    probe = replace(request(salt="tenant-2"), prompt=unsalted)
    assert scorer.score(probe, ENDPOINTS) == [0.0, 0.0, 0.0]
    same = replace(request(salt="tenant-1"), prompt=unsalted)
    assert scorer.score(same, ENDPOINTS) == [1.0, 0.0, 0.0]


def test_the_approximate_index_forgets_the_oldest_tails_first() -> None:
    # Two blocks of room per endpoint: the newest prompt's blocks stay, an old prompt keeps
    # its first block longest (the tail goes first, as vLLM frees tail first).
    scorer = approximate(capacity_tokens=3 * 16)
    scorer.routed(request(text("a", "b")), ENDPOINTS[0])
    scorer.routed(request(text("c", "d")), ENDPOINTS[0])
    assert scorer.score(request(text("c", "d")), ENDPOINTS)[0] == 1.0
    assert scorer.score(request(text("a", "b")), ENDPOINTS)[0] == 0.5
    scorer.routed(request(text("e")), ENDPOINTS[0])
    assert scorer.score(request(text("a", "b")), ENDPOINTS)[0] == 0.0


def test_requests_without_a_prompt_or_a_full_block_score_zero() -> None:
    scorer = approximate()
    scorer.routed(request(text("a")), ENDPOINTS[0])
    assert scorer.score(request(), ENDPOINTS) == [0.0, 0.0, 0.0]
    assert scorer.score(request("short"), ENDPOINTS) == [0.0, 0.0, 0.0]


def precise() -> tuple[PrefixAffinityScorer, KvEventIndex]:
    index = KvEventIndex()
    return PrefixAffinityScorer(index), index


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([("e0", [0, 1, 2], [], False)], [0.75, 0.0, 0.0]),
        ([("e0", [0, 1], [], False), ("e1", [0, 1, 2, 3], [], False)], [0.5, 1.0, 0.0]),
        ([("e0", [0, 1, 2, 3], [], False), ("e0", [], [1], False)], [0.25, 0.0, 0.0]),  # hole
        ([("e0", [0, 1], [], False), ("e0", [], [], True)], [0.0, 0.0, 0.0]),  # cleared
        ([("e2", [1, 2, 3], [], False)], [0.0, 0.0, 0.0]),  # the first block is missing
    ],
)
def test_precise_scores_what_the_events_say_each_engine_holds(
    events: list[tuple[str, list[int], list[int], bool]], expected: list[float]
) -> None:
    scorer, index = precise()
    prompt = request(text("a", "b", "c", "d"))
    assert prompt.prompt is not None
    hashes = list(prompt.prompt.block_hashes(16))
    for key, stored, removed, cleared in events:
        index.apply(key, [hashes[i] for i in stored], [hashes[i] for i in removed], cleared)
    assert scorer.score(prompt, ENDPOINTS) == pytest.approx(expected)


def test_precise_ignores_routed_decisions() -> None:
    scorer, _ = precise()
    scorer.routed(request(text("a", "b")), ENDPOINTS[0])
    assert scorer.score(request(text("a", "b")), ENDPOINTS) == [0.0, 0.0, 0.0]


def test_engine_events_apply_in_order() -> None:
    _, index = precise()
    prompt = TextPrompt(text("a", "b"))
    hashes = tuple(prompt.block_hashes(16))
    apply_kv_events(
        index,
        "e1",
        [
            BlockStored(hashes, None, (), 16),
            BlockRemoved(hashes[1:]),
            AllBlocksCleared(),
            BlockStored(hashes[:1], None, (), 16),
        ],
    )
    assert index.matches(hashes, None, ["e0", "e1"]) == [0, 1]
    assert len(index) == 1
