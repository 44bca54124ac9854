"""TextPrompt: chained hashes of full chunks, the salt in the first, cached per block size."""

from __future__ import annotations

from tests.unit.routing.helpers import text

from trunkline.gateway.routing import TextPrompt


def test_equal_prefixes_give_equal_hashes_until_the_texts_differ() -> None:
    first = TextPrompt(text("a", "b", "c")).block_hashes(16)
    second = TextPrompt(text("a", "b", "x")).block_hashes(16)
    assert len(first) == len(second) == 3
    assert first[:2] == second[:2]
    assert first[2] != second[2]


def test_hashes_are_chained_so_an_equal_block_after_a_different_one_differs() -> None:
    first = TextPrompt(text("a", "c")).block_hashes(16)
    second = TextPrompt(text("b", "c")).block_hashes(16)
    assert first[1] != second[1]


def test_only_full_blocks_are_hashed() -> None:
    # 16 tokens x 4 characters = 64 characters a block.
    assert len(TextPrompt("x" * 63).block_hashes(16)) == 0
    assert len(TextPrompt("x" * 64).block_hashes(16)) == 1
    assert len(TextPrompt("x" * 200).block_hashes(16)) == 3
    assert len(TextPrompt("x" * 200, chars_per_token=2.0).block_hashes(16)) == 6
    assert len(TextPrompt("x" * 200).block_hashes(32)) == 1


def test_the_salt_changes_every_block() -> None:
    plain = TextPrompt(text("a", "b")).block_hashes(16)
    salted = TextPrompt(text("a", "b"), cache_salt="tenant-1").block_hashes(16)
    other = TextPrompt(text("a", "b"), cache_salt="tenant-2").block_hashes(16)
    assert all(len({p, s, o}) == 3 for p, s, o in zip(plain, salted, other, strict=True))
    assert TextPrompt(text("a"), cache_salt="tenant-1").block_hashes(16)[0] == salted[0]


def test_hashes_are_computed_once_per_block_size() -> None:
    prompt = TextPrompt(text("a", "b"))
    assert prompt.block_hashes(16) is prompt.block_hashes(16)
    assert prompt.block_hashes(32) is not prompt.block_hashes(16)


def test_the_token_count_is_estimated_from_the_length() -> None:
    assert TextPrompt("").num_tokens == 0
    assert TextPrompt("abcd").num_tokens == 1
    assert TextPrompt("abcde").num_tokens == 2
    assert TextPrompt("abcdef", chars_per_token=3.0).num_tokens == 2
