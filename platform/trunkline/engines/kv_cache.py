"""Paged KV cache with automatic prefix caching, modelled on vLLM V1's block pool.

Blocks hold ``block_size`` tokens. A block is cached under a chained hash — its parent block's
hash plus its own token ids (plus the request's ``cache_salt`` on the first block) — so a hash
names a whole prefix, and only FULL blocks are ever cached or hit. Blocks are reference counted;
a block nobody references goes to the tail of the free queue but keeps its hash, so later
requests can still hit it until it reaches the head and is reused (LRU eviction). A request's
blocks are freed tail first, so its last blocks are evicted before its first ones, as in vLLM.

Hashes are Python's built-in hash of a tuple of ints (vLLM's ``builtin`` hash algorithm): fast,
and — unlike ``hash(str)`` — the same in every process whatever ``PYTHONHASHSEED`` is. When two
requests compute the same block at once, the first one registered keeps the hash and the other
stays an ordinary block, so stored and removed events always describe exactly the lookup table.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache

from trunkline.engines.events import BlockRemoved, BlockStored, KVCacheEvent

__all__ = [
    "Block",
    "BlockHash",
    "BlockPool",
    "extend_block_hashes",
    "hash_block",
    "prefix_block_hashes",
]

BlockHash = int

_ROOT_HASH = 0x7472756E6B6C696E  # the parent of every first block


@lru_cache(maxsize=4096)
def _salt_key(cache_salt: str) -> int:
    return int.from_bytes(hashlib.blake2b(cache_salt.encode(), digest_size=8).digest(), "little")


def hash_block(
    parent: BlockHash | None, token_ids: Sequence[int], cache_salt: str | None = None
) -> BlockHash:
    """Hash one full block, chained to its parent's hash (``None`` for the first block)."""
    root = _ROOT_HASH if parent is None else parent
    if cache_salt is None:
        return hash((root, *token_ids))
    return hash((root, _salt_key(cache_salt), *token_ids))


def prefix_block_hashes(
    token_ids: Sequence[int], block_size: int, cache_salt: str | None = None
) -> list[BlockHash]:
    """Hashes of every full block of ``token_ids``, as an engine would compute them."""
    hashes: list[BlockHash] = []
    extend_block_hashes(hashes, token_ids, block_size, cache_salt)
    return hashes


def extend_block_hashes(
    hashes: list[BlockHash], token_ids: Sequence[int], block_size: int, cache_salt: str | None
) -> None:
    """Append the hashes of the full blocks of ``token_ids`` not yet in ``hashes``."""
    start, end = len(hashes), len(token_ids) // block_size
    if start >= end:
        return
    parent = hashes[-1] if hashes else _ROOT_HASH
    if start == 0 and cache_salt is not None:
        parent = hash((parent, _salt_key(cache_salt), *token_ids[:block_size]))
        hashes.append(parent)
        start = 1
    append = hashes.append
    for low in range(start * block_size, end * block_size, block_size):
        parent = hash((parent, *token_ids[low : low + block_size]))
        append(parent)


class Block:
    """One physical KV block."""

    __slots__ = ("block_hash", "block_id", "ref_cnt")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_cnt = 0
        self.block_hash: BlockHash | None = None


class BlockPool:
    """Physical blocks, their free queue (LRU order) and the hash → block map."""

    def __init__(
        self, num_blocks: int, *, enable_caching: bool = True, enable_events: bool = False
    ) -> None:
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.blocks = [Block(block_id) for block_id in range(num_blocks)]
        # Head is evicted first; OrderedDict gives O(1) removal from the middle on a cache hit.
        self._free: OrderedDict[int, Block] = OrderedDict(
            (block.block_id, block) for block in self.blocks
        )
        self._cached: dict[BlockHash, Block] = {}
        self.events: list[KVCacheEvent] | None = [] if enable_events else None

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        return 1.0 - len(self._free) / self.num_blocks

    def get_cached_block(self, block_hash: BlockHash) -> Block | None:
        return self._cached.get(block_hash)

    def cached_hashes(self) -> set[BlockHash]:
        return set(self._cached)

    def free_block_ids(self) -> list[int]:
        """Free block ids in eviction order (next to be reused first)."""
        return list(self._free)

    def allocate(self, count: int) -> list[Block]:
        """Take ``count`` blocks from the head of the free queue, evicting their cached hashes."""
        if count > len(self._free):
            raise ValueError(f"cannot allocate {count} blocks, {len(self._free)} free")
        taken: list[Block] = []
        evicted: list[BlockHash] = []
        popitem, cached = self._free.popitem, self._cached
        for _ in range(count):
            block = popitem(last=False)[1]
            block_hash = block.block_hash
            if block_hash is not None:
                del cached[block_hash]
                block.block_hash = None
                evicted.append(block_hash)
            block.ref_cnt = 1
            taken.append(block)
        if evicted and self.events is not None:
            self.events.append(BlockRemoved(tuple(evicted)))
        return taken

    def touch(self, blocks: Sequence[Block]) -> None:
        """Take a reference on cache-hit blocks, pulling free ones out of the free queue."""
        free = self._free
        for block in blocks:
            if block.ref_cnt == 0:
                del free[block.block_id]
            block.ref_cnt += 1

    def free(self, blocks: Sequence[Block]) -> None:
        """Drop one reference per block; unreferenced blocks join the tail in the given order."""
        free = self._free
        for block in blocks:
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                free[block.block_id] = block

    def cache_run(
        self,
        blocks: Sequence[Block],
        first: int,
        last: int,
        block_hashes: Sequence[BlockHash],
        token_ids: Sequence[int],
        block_size: int,
    ) -> None:
        """Register ``blocks[first:last]`` under their hashes; a hash already cached is skipped."""
        cached = self._cached
        run_start = -1
        for index in range(first, last):
            block_hash = block_hashes[index]
            if block_hash in cached:
                if run_start >= 0:
                    self._stored(run_start, index, block_hashes, token_ids, block_size)
                    run_start = -1
                continue
            cached[block_hash] = blocks[index]
            blocks[index].block_hash = block_hash
            if run_start < 0:
                run_start = index
        if run_start >= 0:
            self._stored(run_start, last, block_hashes, token_ids, block_size)

    def _stored(
        self,
        first: int,
        last: int,
        block_hashes: Sequence[BlockHash],
        token_ids: Sequence[int],
        block_size: int,
    ) -> None:
        if self.events is None:
            return
        self.events.append(
            BlockStored(
                block_hashes=tuple(block_hashes[first:last]),
                parent_block_hash=block_hashes[first - 1] if first > 0 else None,
                token_ids=tuple(token_ids[first * block_size : last * block_size]),
                block_size=block_size,
            )
        )

    def take_events(self) -> list[KVCacheEvent]:
        events = self.events
        if not events:
            return []
        self.events = []
        return events
