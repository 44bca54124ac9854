"""Paged KV cache with automatic prefix caching, modelled on vLLM V1's block pool.

Blocks hold ``block_size`` tokens. A block is cached under a chained hash — its parent block's
hash plus its own token ids (plus the request's ``cache_salt`` on the first block) — so a hash
names a whole prefix, and only FULL blocks are ever cached or hit. Blocks are reference counted;
a block nobody references goes to the tail of the free queue but keeps its hash, so later
requests can still hit it until it reaches the head and is reused (LRU eviction). A request's
blocks are freed tail first, so its last blocks are evicted before its first ones, as in vLLM.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Sequence

__all__ = [
    "Block",
    "BlockHash",
    "BlockPool",
    "KVCacheManager",
    "extend_block_hashes",
    "hash_block",
    "prefix_block_hashes",
]

BlockHash = bytes

_ROOT_HASH = hashlib.sha256(b"trunkline-sim-root").digest()[:16]


def hash_block(
    parent: BlockHash | None, token_ids: Sequence[int], cache_salt: str | None = None
) -> BlockHash:
    """Hash one full block, chained to its parent's hash (``None`` for the first block)."""
    digest = hashlib.sha256(parent if parent is not None else _ROOT_HASH)
    tokens = array("I", token_ids)
    if sys.byteorder != "little":
        tokens.byteswap()
    digest.update(tokens.tobytes())
    if cache_salt is not None:
        digest.update(b"\x00salt\x00" + cache_salt.encode())
    return digest.digest()[:16]


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
    for index in range(len(hashes), len(token_ids) // block_size):
        parent = hashes[-1] if hashes else None
        block = token_ids[index * block_size : (index + 1) * block_size]
        hashes.append(hash_block(parent, block, cache_salt if index == 0 else None))


class Block:
    """One physical KV block."""

    __slots__ = ("block_hash", "block_id", "ref_cnt")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_cnt = 0
        self.block_hash: BlockHash | None = None


class BlockPool:
    """Physical blocks, their free queue (LRU order) and the hash → block map."""

    def __init__(self, num_blocks: int, *, enable_caching: bool = True) -> None:
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.blocks = [Block(block_id) for block_id in range(num_blocks)]
        # Head is evicted first; OrderedDict gives O(1) removal from the middle on a cache hit.
        self._free: OrderedDict[int, Block] = OrderedDict(
            (block.block_id, block) for block in self.blocks
        )
        self._cached: dict[BlockHash, Block] = {}

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        return 1.0 - len(self._free) / self.num_blocks

    def get_cached_block(self, block_hash: BlockHash) -> Block | None:
        return self._cached.get(block_hash)

    def free_block_ids(self) -> list[int]:
        """Free block ids in eviction order (next to be reused first)."""
        return list(self._free)

    def allocate(self, count: int) -> list[Block]:
        """Take ``count`` blocks from the head of the free queue, evicting their cached hashes."""
        if count > len(self._free):
            raise ValueError(f"cannot allocate {count} blocks, {len(self._free)} free")
        taken: list[Block] = []
        for _ in range(count):
            _, block = self._free.popitem(last=False)
            self._evict(block)
            block.ref_cnt = 1
            taken.append(block)
        return taken

    def touch(self, blocks: Iterable[Block]) -> None:
        """Take a reference on cache-hit blocks, pulling free ones out of the free queue."""
        for block in blocks:
            if block.ref_cnt == 0:
                del self._free[block.block_id]
            block.ref_cnt += 1

    def free(self, blocks: Iterable[Block]) -> None:
        """Drop one reference per block; unreferenced blocks join the tail in the given order."""
        for block in blocks:
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                self._free[block.block_id] = block

    def cache(self, block: Block, block_hash: BlockHash) -> None:
        """Register a full block under its hash (the first block with a hash wins lookups)."""
        if block.block_hash is not None:
            return
        block.block_hash = block_hash
        self._cached.setdefault(block_hash, block)

    def _evict(self, block: Block) -> None:
        if block.block_hash is None:
            return
        if self._cached.get(block.block_hash) is block:
            del self._cached[block.block_hash]
        block.block_hash = None


class KVCacheManager:
    """Per-request block tables on top of a :class:`BlockPool`."""

    def __init__(self, num_blocks: int, block_size: int, *, enable_caching: bool = True) -> None:
        self.block_size = block_size
        self.pool = BlockPool(num_blocks, enable_caching=enable_caching)
        self._req_blocks: dict[str, list[Block]] = {}
        self._num_cached_blocks: dict[str, int] = {}

    @property
    def usage(self) -> float:
        return self.pool.usage

    def num_blocks_of(self, req_id: str) -> int:
        return len(self._req_blocks.get(req_id, ()))

    def lookup(self, block_hashes: Sequence[BlockHash], num_tokens: int) -> list[Block]:
        """Longest run of cached full blocks, leaving at least the last token to compute."""
        if not self.pool.enable_caching:
            return []
        # The last token must be computed to get logits, so a fully cached prompt still
        # recomputes its last block (vLLM does the same).
        max_blocks = (num_tokens - 1) // self.block_size
        hits: list[Block] = []
        for block_hash in block_hashes[:max_blocks]:
            block = self.pool.get_cached_block(block_hash)
            if block is None:
                break
            hits.append(block)
        return hits

    def allocate_slots(
        self,
        req_id: str,
        num_new_tokens: int,
        *,
        num_computed_tokens: int,
        num_tokens: int,
        block_hashes: Sequence[BlockHash],
        new_computed_blocks: Sequence[Block] = (),
    ) -> bool:
        """Reserve blocks for ``num_new_tokens`` more tokens; ``False`` when they do not fit.

        ``num_computed_tokens`` excludes the tokens of ``new_computed_blocks`` (fresh hits).
        """
        blocks = self._req_blocks.get(req_id, [])
        total = num_computed_tokens + len(new_computed_blocks) * self.block_size + num_new_tokens
        required = -(-total // self.block_size) - len(blocks) - len(new_computed_blocks)
        evictable_hits = sum(1 for block in new_computed_blocks if block.ref_cnt == 0)
        if required > self.pool.num_free_blocks - evictable_hits:
            return False
        self.pool.touch(new_computed_blocks)
        blocks.extend(new_computed_blocks)
        if required > 0:
            blocks.extend(self.pool.allocate(required))
        self._req_blocks[req_id] = blocks
        if self.pool.enable_caching:
            # Blocks are cached when scheduled, as in vLLM: their tokens are computed this step.
            self._cache_full_blocks(req_id, blocks, min(total, num_tokens), block_hashes)
        return True

    def free(self, req_id: str) -> None:
        """Release a request's blocks, last block first so it is evicted first."""
        blocks = self._req_blocks.pop(req_id, [])
        self._num_cached_blocks.pop(req_id, None)
        self.pool.free(reversed(blocks))

    def _cache_full_blocks(
        self, req_id: str, blocks: list[Block], num_tokens: int, block_hashes: Sequence[BlockHash]
    ) -> None:
        first = self._num_cached_blocks.get(req_id, 0)
        last = min(num_tokens // self.block_size, len(block_hashes))
        for index in range(first, last):
            self.pool.cache(blocks[index], block_hashes[index])
        self._num_cached_blocks[req_id] = max(first, last)
