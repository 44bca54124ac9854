"""The prefix-cache hit rate of an unbounded cache shared by every engine: the ceiling any
routing policy can reach on a workload (and, for the Mooncake trace, of a shared LRU cache of a
given size: the ceiling for a fleet whose KV caches together hold that many tokens).

Counted the way vLLM counts ``prefix_cache_hits / prefix_cache_queries``: for each request in
arrival order, the longest run of its full blocks already seen, capped so the last prompt token
is computed, over its prompt tokens; then its blocks (and a scripted answer's) join the cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from trunkline.engines.kv_cache import prefix_block_hashes
from trunkline.workloads.schemas import WorkloadRequest
from trunkline.workloads.traces import MOONCAKE_BLOCK_TOKENS

__all__ = ["OracleHitRate", "mooncake_oracle", "token_oracle"]


@dataclass(frozen=True, slots=True)
class OracleHitRate:
    token_hit_rate: float
    """Cached prompt tokens over prompt tokens, at the engine's block size."""
    block_hit_rate: float | None = None
    """Mooncake's own measure: hit 512-token blocks over blocks (README: 36.6 % on conversation)."""


def token_oracle(requests: Iterable[WorkloadRequest], block_size: int) -> OracleHitRate:
    seen: set[int] = set()
    queries = hits = 0
    for request in requests:
        prompt = request.prompt
        hashes = prompt.block_hashes(block_size)
        limit = (prompt.num_tokens - 1) // block_size
        hit = 0
        while hit < limit and hashes[hit] in seen:
            hit += 1
        queries += prompt.num_tokens
        hits += hit * block_size
        seen.update(hashes)
        if request.output_tokens:
            whole = prompt.token_ids + request.output_tokens
            seen.update(prefix_block_hashes(whole, block_size, prompt.cache_salt))
    return OracleHitRate(hits / queries if queries else 0.0)


def mooncake_oracle(
    records: Iterable[tuple[list[int], int]],
    block_size: int,
    *,
    capacity_tokens: int | None = None,
) -> OracleHitRate:
    """Both measures from the trace's hash ids (no tokens built): ids are chained, so an equal
    id is an equal prefix; a block seen shorter than now hits only its full engine blocks.

    With ``capacity_tokens`` the shared cache is an LRU of that many tokens (say, a fleet's
    whole KV cache) instead of unbounded: a request's blocks are touched last to first, so the
    tail of a chain is evicted before its head, as vLLM frees a finished request's blocks."""
    if capacity_tokens is not None and capacity_tokens < 1:
        raise ValueError("capacity_tokens must be at least 1")
    seen: OrderedDict[int, int] = OrderedDict()  # hash id -> longest length seen, LRU order
    held = 0  # tokens in ``seen``
    blocks = block_hits = queries = hits = 0
    for hash_ids, input_length in records:
        prefix_blocks = hit_tokens = 0
        lengths = [
            min(MOONCAKE_BLOCK_TOKENS, input_length - position * MOONCAKE_BLOCK_TOKENS)
            for position in range(len(hash_ids))
        ]
        for hash_id, length in zip(hash_ids, lengths, strict=True):
            known = seen.get(hash_id, 0)
            if known >= length:
                prefix_blocks += 1
                hit_tokens += length
            else:
                hit_tokens += known // block_size * block_size
                break
        for hash_id, length in zip(reversed(hash_ids), reversed(lengths), strict=True):
            known = seen.get(hash_id, 0)
            if length > known:
                seen[hash_id] = length
                held += length - known
            seen.move_to_end(hash_id)
        while capacity_tokens is not None and held > capacity_tokens and seen:
            held -= seen.popitem(last=False)[1]
        blocks += len(hash_ids)
        block_hits += prefix_blocks
        queries += input_length
        hits += min(hit_tokens // block_size, (input_length - 1) // block_size) * block_size
    return OracleHitRate(hits / queries if queries else 0.0, block_hits / blocks if blocks else 0.0)
