"""Prompt content for simulated workloads: deterministic token runs that share exactly what the
workload says they share, and prompts that hash themselves into an engine's blocks once.

:func:`segment` gives the tokens of one named piece of text (a preamble, a document, a chat
turn, a Mooncake 512-token block): the same key always gives the same tokens, a shorter length
gives a prefix of the longer one, and different keys differ from their first token — so two
prompts share a cached prefix exactly when they are built from the same segments in the same
order. Tokens come from slices of one pseudo-random table (fast: no per-token Python work).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from functools import lru_cache

from trunkline.engines.kv_cache import BlockHash, prefix_block_hashes
from trunkline.engines.tokens import FIRST_ORDINARY_ID, VOCAB_SIZE

__all__ = ["Prompt", "build_prompt", "segment", "stable_key"]

_TABLE_SIZE = 1 << 17
_SPAN = VOCAB_SIZE - FIRST_ORDINARY_ID
_KEY_TOKENS = 3  # 32k^3 ≈ 3e13 distinct segment keys


@lru_cache(maxsize=1)
def _table() -> list[int]:
    rng = random.Random(0x5E6)
    return [rng.randrange(FIRST_ORDINARY_ID, VOCAB_SIZE) for _ in range(_TABLE_SIZE)]


@lru_cache(maxsize=1024)
def _namespace(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=7).digest(), "little")


def stable_key(namespace: str, *parts: int) -> int:
    """A key naming one segment, the same in every process."""
    key = _namespace(namespace)
    for part in parts:
        key = (key * 1_000_003 + part) & ((1 << 62) - 1)
    return key


def segment(key: int, length: int) -> list[int]:
    """``length`` tokens of the segment named ``key``; its first tokens spell the key."""
    head = [FIRST_ORDINARY_ID + (key // _SPAN**i) % _SPAN for i in range(_KEY_TOKENS)]
    if length <= _KEY_TOKENS:
        return head[:length]
    table = _table()
    offset = key % _TABLE_SIZE
    rest = length - _KEY_TOKENS
    tokens = head + table[offset : offset + rest]
    while len(tokens) < length:  # wrap around the table
        tokens += table[: length - len(tokens)]
    return tokens


class Prompt:
    """A prompt's token ids, and its block hashes per block size, computed once."""

    __slots__ = ("_hashes", "cache_salt", "token_ids")

    def __init__(self, token_ids: list[int], cache_salt: str | None = None) -> None:
        self.token_ids = token_ids
        self.cache_salt = cache_salt
        self._hashes: dict[int, list[BlockHash]] = {}

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    def block_hashes(self, block_size: int) -> Sequence[BlockHash]:
        hashes = self._hashes.get(block_size)
        if hashes is None:
            hashes = prefix_block_hashes(self.token_ids, block_size, self.cache_salt)
            self._hashes[block_size] = hashes
        return hashes


def build_prompt(parts: Iterable[list[int]], cache_salt: str | None = None) -> Prompt:
    tokens: list[int] = []
    for part in parts:
        tokens += part
    return Prompt(tokens, cache_salt)
