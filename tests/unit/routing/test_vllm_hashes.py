"""vLLM's block hashes as the gateway computes them: chained, full blocks only, the salt in the
first, the seed and algorithm the engines use. That they equal what real vLLM publishes is
checked against vLLM itself (tests/integration/vllm/test_vllm_engine_state.py)."""

from __future__ import annotations

import hashlib
import pickle

import pytest

from trunkline.engines.events import BlockStored
from trunkline.gateway.routing.prefix_index import KvEventIndex, apply_kv_events
from trunkline.gateway.routing.token_prompt import TokenPrompt
from trunkline.gateway.routing.vllm_hashes import DEFAULT_SEED, VllmHashing, event_block_hash

TOKENS = list(range(100, 170))  # 70 tokens: four full blocks of 16, six left over


def test_only_full_blocks_are_named_and_each_name_covers_its_prefix() -> None:
    hashing = VllmHashing()
    hashes = hashing.block_hashes(TOKENS, 16)

    assert len(hashes) == 4
    # A prompt sharing the first 40 tokens shares the first two blocks' names, not the third.
    other = hashing.block_hashes(TOKENS[:40] + [7] * 30, 16)
    assert other[:2] == hashes[:2] and other[2] != hashes[2]
    # A block's name depends on every block before it, not only its own tokens.
    shifted = hashing.block_hashes([1, *TOKENS[1:]], 16)
    assert all(a != b for a, b in zip(shifted, hashes, strict=True))
    assert all(0 <= h < 2**64 for h in hashes)


def test_the_first_block_is_chained_to_the_seed_as_vllm_chains_it() -> None:
    # NONE_HASH is the digest of the seed; a block hashes (parent, its tokens, extra keys).
    none_hash = hashlib.sha256(pickle.dumps(DEFAULT_SEED, protocol=5)).digest()
    first = hashlib.sha256(pickle.dumps((none_hash, tuple(TOKENS[:16]), None), protocol=5))
    assert VllmHashing().block_hashes(TOKENS, 16)[0] == int.from_bytes(first.digest(), "big") & (
        2**64 - 1
    )


@pytest.mark.parametrize(
    "other",
    [VllmHashing(seed="0"), VllmHashing(algo="sha256_cbor")],
    ids=["PYTHONHASHSEED=0", "sha256_cbor"],
)
def test_engines_hashing_otherwise_name_every_block_otherwise(other: VllmHashing) -> None:
    ours = VllmHashing().block_hashes(TOKENS, 16)
    theirs = other.block_hashes(TOKENS, 16)
    assert len(theirs) == len(ours) and not set(theirs) & set(ours)


def test_a_salt_renames_the_first_block_and_so_every_block_after_it() -> None:
    hashing = VllmHashing()
    plain = hashing.block_hashes(TOKENS, 16)
    salted = hashing.block_hashes(TOKENS, 16, cache_salt="tenant-a")

    assert not set(salted) & set(plain)
    assert hashing.block_hashes(TOKENS, 16, cache_salt="tenant-b")[0] != salted[0]
    assert hashing.block_hashes(TOKENS, 16, cache_salt="tenant-a") == salted


def test_a_token_prompt_hashes_once_per_block_size() -> None:
    prompt = TokenPrompt(TOKENS, VllmHashing(), cache_salt="s")
    assert prompt.num_tokens == 70
    assert prompt.block_hashes(16) is prompt.block_hashes(16)
    assert len(prompt.block_hashes(32)) == 2
    assert list(prompt.block_hashes(16)) == VllmHashing().block_hashes(TOKENS, 16, "s")


def test_digests_sent_as_bytes_count_as_the_ints_vllm_sends_by_default() -> None:
    digest = bytes(range(32))
    assert event_block_hash(digest) == int.from_bytes(digest[-8:], "big")
    assert event_block_hash(12345) == 12345
    hashes = VllmHashing().block_hashes(TOKENS, 16)
    index = KvEventIndex()
    as_bytes = tuple(h.to_bytes(32, "big") for h in hashes)  # the low 64 bits are the int
    apply_kv_events(index, "e1", [BlockStored(as_bytes, None, (), 16)])
    assert index.matches(hashes, None, ["e1"]) == [4]
