"""Segments share exactly what they are meant to; prompts hash like the engine, once."""

from __future__ import annotations

from trunkline.engines import prefix_block_hashes
from trunkline.engines.tokens import FIRST_ORDINARY_ID, VOCAB_SIZE
from trunkline.workloads import Prompt, build_prompt, segment, stable_key


def test_a_segment_is_the_same_everywhere_and_shorter_is_a_prefix() -> None:
    key = stable_key("doc", 7)
    assert segment(key, 300) == segment(stable_key("doc", 7), 300)
    assert segment(key, 120) == segment(key, 300)[:120]
    assert len(segment(key, 200_000)) == 200_000  # longer than the token table: wraps
    assert all(FIRST_ORDINARY_ID <= t < VOCAB_SIZE for t in segment(key, 5000))


def test_different_keys_differ_from_their_first_token() -> None:
    keys = [stable_key("doc", i) for i in range(200)] + [stable_key("other", 0)]
    firsts = {tuple(segment(key, 3)) for key in keys}
    assert len(firsts) == len(keys)


def test_prompts_share_blocks_exactly_up_to_where_their_segments_diverge() -> None:
    preamble = segment(stable_key("preamble", 1), 64)
    first = build_prompt([preamble, segment(stable_key("user", 1), 40)])
    second = build_prompt([preamble, segment(stable_key("user", 2), 40)])
    a, b = first.block_hashes(16), second.block_hashes(16)
    assert a[:4] == b[:4]
    assert a[4] != b[4]


def test_block_hashes_are_the_engines_and_computed_once_per_block_size() -> None:
    prompt = Prompt(segment(stable_key("p", 1), 100), cache_salt="tenant-a")
    hashes = prompt.block_hashes(16)
    assert list(hashes) == prefix_block_hashes(prompt.token_ids, 16, "tenant-a")
    assert prompt.block_hashes(16) is hashes
    assert len(prompt.block_hashes(32)) == 3
