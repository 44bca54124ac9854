"""Per-request block tables on top of a :class:`~trunkline.engines.kv_cache.BlockPool`.

The scheduler's view of the KV cache, as vLLM V1's ``KVCacheManager``: find a request's longest
cached prefix, reserve slots for the tokens it computes this step (failing, never over-committing,
when the free blocks do not suffice), cache its full blocks as soon as they are scheduled, and
free a finished or preempted request's blocks tail first.
"""

from __future__ import annotations

from collections.abc import Sequence

from trunkline.engines.kv_cache import Block, BlockHash, BlockPool

__all__ = ["KVCacheManager"]


class KVCacheManager:
    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        *,
        enable_caching: bool = True,
        enable_events: bool = False,
    ) -> None:
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.pool = BlockPool(
            num_blocks, enable_caching=enable_caching, enable_events=enable_events
        )
        self._req_blocks: dict[str, list[Block]] = {}
        self._num_cached_blocks: dict[str, int] = {}

    @property
    def usage(self) -> float:
        return self.pool.usage

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks

    def num_blocks_of(self, req_id: str) -> int:
        return len(self._req_blocks.get(req_id, ()))

    def lookup(self, block_hashes: Sequence[BlockHash], num_tokens: int) -> list[Block]:
        """Longest run of cached full blocks, leaving at least the last token to compute."""
        if not self.enable_caching:
            return []
        # The last token must be computed to get logits, so a fully cached prompt still
        # recomputes its last block (vLLM caps the hit at num_tokens - 1 the same way).
        max_blocks = (num_tokens - 1) // self.block_size
        get = self.pool.get_cached_block
        hits: list[Block] = []
        for block_hash in block_hashes[:max_blocks]:
            block = get(block_hash)
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
        token_ids: Sequence[int],
        block_hashes: Sequence[BlockHash],
        new_computed_blocks: Sequence[Block] = (),
    ) -> bool:
        """Reserve blocks for ``num_new_tokens`` more tokens; ``False`` when they do not fit.

        ``num_computed_tokens`` excludes the tokens of ``new_computed_blocks`` (fresh hits).
        """
        blocks = self._req_blocks.get(req_id)
        if blocks is None:
            blocks = self._req_blocks[req_id] = []
        num_hits = len(new_computed_blocks)
        total = num_computed_tokens + num_hits * self.block_size + num_new_tokens
        required = -(-total // self.block_size) - len(blocks) - num_hits
        pool = self.pool
        if num_hits:
            evictable_hits = sum(1 for block in new_computed_blocks if block.ref_cnt == 0)
            if required > pool.num_free_blocks - evictable_hits:
                return False
            pool.touch(new_computed_blocks)
            blocks.extend(new_computed_blocks)
        elif required > pool.num_free_blocks:
            return False
        if required > 0:
            blocks.extend(pool.allocate(required))
        if self.enable_caching:
            # Blocks are cached when scheduled, as in vLLM: their tokens are computed this step.
            self.cache_blocks(req_id, min(total, len(token_ids)), token_ids, block_hashes)
        return True

    def append_block(self, req_id: str) -> None:
        """Give a running request one more block (the virtual driver's batched decode steps)."""
        self._req_blocks[req_id].extend(self.pool.allocate(1))

    def cache_blocks(
        self,
        req_id: str,
        num_tokens: int,
        token_ids: Sequence[int],
        block_hashes: Sequence[BlockHash],
    ) -> None:
        """Cache the request's full blocks among its first ``num_tokens`` tokens."""
        first = self._num_cached_blocks.get(req_id, 0)
        last = min(num_tokens // self.block_size, len(block_hashes))
        if last <= first:
            return
        blocks = self._req_blocks[req_id]
        self.pool.cache_run(blocks, first, last, block_hashes, token_ids, self.block_size)
        self._num_cached_blocks[req_id] = last

    def free(self, req_id: str) -> None:
        """Release a request's blocks, last block first so it is evicted first."""
        blocks = self._req_blocks.pop(req_id, None)
        self._num_cached_blocks.pop(req_id, None)
        if blocks:
            self.pool.free(blocks[::-1])
